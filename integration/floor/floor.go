// Package floor measures the hardware bandwidths that bound how fast a
// checkpoint can be restored: reading the image from disk (or from the page
// cache when it is warm), copying memory, and faulting in the fresh anonymous
// memory that the restored process writes its pages into. A restore that runs
// close to these numbers has nothing left to gain in software; one far from
// them is losing time somewhere else.
package floor

import "fmt"

// Result is one measurement: Bytes moved in Seconds. Note says how it was
// measured (streams, threads, whether O_DIRECT was used, ...) so that a
// number is never read without the conditions that produced it.
type Result struct {
	Name    string
	Bytes   int64
	Seconds float64
	Note    string
}

// GBps is the bandwidth in decimal gigabytes per second (1e9 bytes), the
// unit disk and memory vendors quote, so results compare with data sheets.
// It is 0 when nothing was timed.
func (r Result) GBps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Seconds / 1e9
}

// Floor returns the lower bound, in seconds, that a restore cannot beat: the
// imageBytes of the checkpoint image have to be read at readBps, and the
// gpuBytes of GPU state have to be copied to the device at h2dBps, at the
// very least once each. The GPU part is skipped when gpuBytes or h2dBps is 0
// (no GPU, or no host-to-device figure). Bandwidths are bytes per second; a
// zero readBps with a non-empty image gives +Inf.
func Floor(imageBytes int64, readBps float64, gpuBytes int64, h2dBps float64) float64 {
	var s float64
	if imageBytes > 0 {
		s += float64(imageBytes) / readBps
	}
	if gpuBytes > 0 && h2dBps > 0 {
		s += float64(gpuBytes) / h2dBps
	}
	return s
}

// checkCount rejects a stream or thread count below 1, which would
// otherwise measure nothing and report a meaningless zero.
func checkCount(what string, n int) error {
	if n < 1 {
		return fmt.Errorf("floor: %s must be at least 1, got %d", what, n)
	}
	return nil
}
