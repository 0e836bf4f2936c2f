package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/floor"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// restoreResult holds one run of the restore benchmark.
type restoreResult struct {
	cold, checkpoint, restoreHuge time.Duration
	// medians of warmRuns interleaved restores with the image in the page
	// cache: the shim with its default restore_threads, the shim with
	// restore_threads = 1 (CRIU's single reader), and plain `criu restore`
	restore, restoreOneThread, plainRestore time.Duration
	restoreThreads                          int // what the default means here
	// restores with the page cache dropped first, with and without the
	// shim's prefetch readers
	droppedCache, droppedCacheNoPrefetch time.Duration
	imageBytes                           int64
	phases                               string
	timeline                             map[string]float64 // the first default restore's, by restoreTimeline
	cri                                  *criResult
	floor                                []floor.Result
	parallel                             map[int]time.Duration // n restored at once: time until all answer
}

// restoreBench compares, for one workload that spends warmup seconds building
// stateMB of memory: its cold start through the shim, its restore through the
// shim from the store, and a plain `criu restore` of the same workload run as
// a host process. Time to first answer is measured from the host the same
// way each time (nc on loopback in the workload's network namespace).
func restoreBench(bed *testbed.Bed, dir string, stateMB, warmup int) (*restoreResult, error) {
	env := []string{fmt.Sprintf("STATE_MB=%d", stateMB), fmt.Sprintf("WARMUP_SECONDS=%d", warmup)}
	store := filepath.Join(dir, "store")
	options := filepath.Join(dir, "handler.toml")
	body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n", store, testbed.StatefulControlDir)
	if err := os.WriteFile(options, []byte(body), 0o600); err != nil {
		return nil, err
	}
	var r restoreResult
	var err error
	if r.cold, err = runToAnswer(bed, "bench-cold", options, env); err != nil {
		return nil, err
	}
	defer removeNetns("bench-cold")
	start := time.Now()
	if out, err := bed.Ctr("tasks", "checkpoint", "bench-cold"); err != nil {
		return nil, fmt.Errorf("checkpoint: %v: %s", err, out)
	}
	r.checkpoint = time.Since(start)
	stopContainer(bed, "bench-cold")
	r.imageBytes = dirBytes(store)
	if err := warmRestores(bed, &r, dir, body, env); err != nil {
		return nil, err
	}
	// The same restore with restore_huge_pages = true.
	optionsHuge := filepath.Join(dir, "handler-huge.toml")
	if err := os.WriteFile(optionsHuge, []byte(body+"restore_huge_pages = true\n"), 0o600); err != nil {
		return nil, err
	}
	if r.restoreHuge, err = runToAnswer(bed, "bench-restored-huge", optionsHuge, env); err != nil {
		return nil, err
	}
	defer removeNetns("bench-restored-huge")
	stopContainer(bed, "bench-restored-huge")
	// From a cold page cache: prefetch_readers = 4 and the default (off),
	// interleaved droppedRuns times; medians.
	optionsPrefetch := filepath.Join(dir, "handler-prefetch.toml")
	if err := os.WriteFile(optionsPrefetch, []byte(body+"prefetch_readers = 4\n"), 0o600); err != nil {
		return nil, err
	}
	var on, off []time.Duration
	for i := range droppedRuns {
		d, err := restoreDroppedCache(bed, fmt.Sprintf("bench-dropped-%d", i), optionsPrefetch, env)
		if err != nil {
			return nil, err
		}
		on = append(on, d)
		if d, err = restoreDroppedCache(bed, fmt.Sprintf("bench-dropped-noprefetch-%d", i), options, env); err != nil {
			return nil, err
		}
		off = append(off, d)
	}
	r.droppedCache, r.droppedCacheNoPrefetch = median(on), median(off)
	plain, err := plainCRIU(dir, env, warmRuns)
	if err != nil {
		return nil, err
	}
	r.plainRestore = median(plain)
	if r.parallel, err = parallelRestores(bed, options, env, []int{1, 2, 4}); err != nil {
		return nil, err
	}
	if r.cri, err = criBench(bed, dir, env); err != nil {
		return nil, fmt.Errorf("through CRI: %w", err)
	}
	r.floor = measureFloor(store)
	return &r, nil
}

// droppedRuns is how often each restore from a dropped page cache runs;
// warmRuns how often each restore with the image in the page cache runs.
var droppedRuns, warmRuns = 3, 3

// warmRestores times restores with the image in the page cache, the
// handler's default restore_threads against restore_threads = 1,
// interleaved; the first restore's status gives the phases.
func warmRestores(bed *testbed.Bed, r *restoreResult, dir, body string, env []string) error {
	dflt, oneThread := filepath.Join(dir, "handler.toml"), filepath.Join(dir, "handler-one-thread.toml")
	if err := os.WriteFile(oneThread, []byte(body+"restore_threads = 1\n"), 0o600); err != nil {
		return err
	}
	r.restoreThreads = options.Default().CRIURestoreThreads(runtime.NumCPU())
	var threads, one []time.Duration
	for i := range warmRuns {
		for _, run := range []struct {
			name, options string
			times         *[]time.Duration
		}{{"bench-restored", dflt, &threads}, {"bench-restored-1t", oneThread, &one}} {
			id := fmt.Sprintf("%s-%d", run.name, i)
			ran, err := runToAnswerFrom(bed, id, run.options, env)
			d := ran.took
			removeNetns(id)
			if err == nil {
				err = checkRestored(id, &r.phases)
			}
			if err == nil && r.timeline == nil && run.options == dflt {
				r.timeline, err = restoreTimeline(statusFile(id), ran)
			}
			stopContainer(bed, id)
			if err != nil {
				return err
			}
			*run.times = append(*run.times, d)
		}
	}
	r.restore, r.restoreOneThread = median(threads), median(one)
	return nil
}

// statusFile is the shim's snapshot-status of container id (empty if
// there is none).
func statusFile(id string) []byte {
	data, _ := os.ReadFile(filepath.Join("/run/containerd-shim-snapshot", id, "snapshot-status"))
	return data
}

// checkRestored fails unless the container's status says it was restored;
// the first status read is kept in phases.
func checkRestored(id string, phases *string) error {
	status := strings.TrimSpace(string(statusFile(id)))
	if !strings.Contains(status, `"restored"`) {
		return fmt.Errorf("%s was not restored: %s", id, status)
	}
	if *phases == "" {
		*phases = status
	}
	return nil
}

// restoreDroppedCache drops the page cache and times one restore to its
// first answer.
func restoreDroppedCache(bed *testbed.Bed, id, options string, env []string) (time.Duration, error) {
	if err := dropPageCache(); err != nil {
		return 0, err
	}
	took, err := runToAnswer(bed, id, options, env)
	removeNetns(id)
	stopContainer(bed, id)
	return took, err
}

// dropPageCache writes back and drops the page cache, so that what is read
// next comes from the disk.
func dropPageCache() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return fmt.Errorf("dropping the page cache: %w", err)
	}
	return nil
}

// parallelRestores restores n containers at once from the one checkpoint,
// for each n, and returns the time until the last of them answered.
func parallelRestores(bed *testbed.Bed, options string, env []string, ns []int) (map[int]time.Duration, error) {
	out := map[int]time.Duration{}
	for _, n := range ns {
		start := time.Now()
		errs := make(chan error, n)
		for i := range n {
			id := fmt.Sprintf("bench-par%d-%d", n, i)
			go func() {
				_, err := runToAnswer(bed, id, options, env)
				errs <- err
			}()
		}
		var firstErr error
		for range n {
			if err := <-errs; err != nil && firstErr == nil {
				firstErr = err
			}
		}
		out[n] = time.Since(start)
		for i := range n {
			id := fmt.Sprintf("bench-par%d-%d", n, i)
			stopContainer(bed, id)
			removeNetns(id)
		}
		if firstErr != nil {
			return nil, firstErr
		}
	}
	return out, nil
}

// measureFloor measures, on this machine and now, what bounds a restore of
// the store's checkpoint: reading it from disk and from the page cache, and
// faulting in fresh memory for it. Failures are kept as notes.
func measureFloor(store string) []floor.Result {
	var out []floor.Result
	add := func(r floor.Result, err error) {
		if err != nil {
			r.Note = "error: " + err.Error()
		}
		out = append(out, r)
	}
	add(floor.DiskRead(store, 1))
	add(floor.CacheRead(store, runtime.NumCPU()))
	add(floor.FaultIn(1<<30, 1))
	add(floor.FaultInHuge(1<<30, 1))
	add(floor.FirstReadAfterFill(1<<30, 1))
	return out
}

// runToAnswer starts the workload in its own network namespace (named after
// the container; see removeNetns) and returns the time until it first answers.
func runToAnswer(bed *testbed.Bed, id, options string, env []string) (time.Duration, error) {
	r, err := runToAnswerFrom(bed, id, options, env)
	return r.took, err
}

// answered is when `ctr run` started and returned, and how long it took
// from its start to the workload's first answer.
type answered struct {
	start, ctrDone time.Time
	took           time.Duration
}

// runToAnswerFrom is runToAnswer that also says when `ctr run` started
// and returned.
func runToAnswerFrom(bed *testbed.Bed, id, options string, env []string) (r answered, err error) {
	netns, _, err := testbed.Netns(id)
	if err != nil {
		return r, err
	}
	args := []string{"run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", options, "--with-ns", "network:" + netns}
	for _, e := range env {
		args = append(args, "--env", e)
	}
	r.start = time.Now()
	if out, err := bed.Ctr(append(args, testbed.StatefulRef, id)...); err != nil {
		return r, fmt.Errorf("%s: %v: %s", id, err, out)
	}
	r.ctrDone = time.Now()
	r.took, err = waitAnswer(r.start, "nsenter", "--net="+netns, "busybox", "nc", "127.0.0.1", "8080")
	if err != nil {
		status := statusFile(id)
		tasks, _ := bed.Ctr("tasks", "ls")
		rules, _ := exec.Command("ip", "netns", "exec", id, "iptables", "-S").CombinedOutput()
		err = fmt.Errorf("%s: %w\nstatus: %s\ntasks:\n%s\niptables in its namespace:\n%s", id, err, status, tasks, rules)
	}
	return r, err
}

// restoreTimeline splits a restore's time to first answer, from `ctr run`
// at r.start, by the moments its status records (shim.snapshotStatus):
// until the shim's process started, until it got Create, Create (the plan
// and runc's create), until Start, the restore itself, until `ctr run`
// returned, and from then to the first answer (the workload and this
// bench's probe, a new nsenter and nc every 10 ms).
func restoreTimeline(status []byte, r answered) (map[string]float64, error) {
	t, err := statusTimeline(status)
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"ctr_run_to_shim":   t["shim_started"].Sub(r.start).Seconds(),
		"shim_to_create":    t["create"].Sub(t["shim_started"]).Seconds(),
		"create":            t["created"].Sub(t["create"]).Seconds(),
		"created_to_start":  t["start"].Sub(t["created"]).Seconds(),
		"start_to_restored": t["restored"].Sub(t["start"]).Seconds(),
		"restored_to_ctr":   r.ctrDone.Sub(t["restored"]).Seconds(),
		"ctr_to_answer":     r.start.Add(r.took).Sub(r.ctrDone).Seconds(),
	}, nil
}

// statusTimeline reads a restore's moments from its status: the
// timeline's, and its end (the status's at) as "restored".
func statusTimeline(status []byte) (map[string]time.Time, error) {
	var st struct {
		At       time.Time            `json:"at"`
		Timeline map[string]time.Time `json:"timeline"`
	}
	if err := json.Unmarshal(status, &st); err != nil {
		return nil, err
	}
	t := st.Timeline
	for _, k := range []string{"shim_started", "create", "created", "start"} {
		if t[k].IsZero() {
			return nil, fmt.Errorf("status has no timeline %q: %s", k, status)
		}
	}
	t["restored"] = st.At
	return t, nil
}

// removeNetns removes a workload's network namespace once its container is
// gone (runc needs the path for as long as the container exists).
func removeNetns(id string) { exec.Command("ip", "netns", "delete", id).Run() }

func stopContainer(bed *testbed.Bed, id string) {
	bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
	for i := 0; i < 100; i++ {
		if _, err := bed.Ctr("tasks", "delete", id); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	bed.Ctr("containers", "delete", id)
}

// waitAnswer polls until the probe command prints a workload answer.
// answerTimeout bounds the wait for a workload's first answer.
var answerTimeout = 5 * time.Minute

func waitAnswer(start time.Time, probe ...string) (time.Duration, error) {
	deadline := start.Add(answerTimeout)
	for time.Now().Before(deadline) {
		out, _ := exec.Command(probe[0], probe[1:]...).Output()
		if strings.HasPrefix(string(out), "count=") {
			return time.Since(start), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no answer from %v within %s", probe, answerTimeout)
}

// plainCRIU runs the same workload as a plain host process, dumps it with
// `criu dump`, and times runs restores with `criu restore` to the first
// answer, killing each restored process before the next: the baseline the
// shim's restore is compared with. CRIU runs as upstream's (none of the
// project patches' variables set).
func plainCRIU(dir string, env []string, runs int) ([]time.Duration, error) {
	images := filepath.Join(dir, "plain-images")
	if err := os.MkdirAll(images, 0o700); err != nil {
		return nil, err
	}
	pid, err := dumpPlain(dir, images, env)
	if err != nil {
		return nil, err
	}
	var took []time.Duration
	for range runs {
		d, err := restorePlain(images)
		syscall.Kill(-pid, syscall.SIGKILL)
		if err != nil {
			return nil, err
		}
		if err := waitGone(pid); err != nil {
			return nil, err
		}
		took = append(took, d)
	}
	return took, nil
}

// dumpPlain starts the workload as a host process and dumps it into images;
// it returns the workload's PID, which CRIU restores it with.
func dumpPlain(dir, images string, env []string) (int, error) {
	cmd := exec.Command(filepath.Join(dir, "build", "stateful"))
	cmd.Env = append(os.Environ(), append(env, "STATE_FILE="+filepath.Join(dir, "plain-state.txt"), "GODEBUG=multipathtcp=0")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	pid := cmd.Process.Pid
	if _, err := waitAnswer(time.Now(), "busybox", "nc", "127.0.0.1", "8080"); err != nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		return 0, err
	}
	if out, err := exec.Command("criu", "dump", "-t", fmt.Sprint(pid), "-D", images).CombinedOutput(); err != nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		return 0, fmt.Errorf("criu dump: %v: %s", err, out)
	}
	// The dumped process must be reaped before its PID can be restored.
	<-exited
	return pid, nil
}

// restorePlain times one `criu restore` of images to the first answer.
// Right after the process was dumped or killed its PIDs can still be taken
// for a moment (FACTS.md: "Can't fork for PID: File exists"); it retries,
// timing the attempt that succeeds.
func restorePlain(images string) (time.Duration, error) {
	var start time.Time
	for attempt := 1; ; attempt++ {
		start = time.Now()
		cmd := exec.Command("criu", "restore", "-d", "-D", images)
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CRIU_RESTORE_") })
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 10 || !strings.Contains(string(out), "File exists") {
			return 0, fmt.Errorf("criu restore: %v: %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return waitAnswer(start, "busybox", "nc", "127.0.0.1", "8080")
}

// waitGone waits until the killed process pid has been reaped.
func waitGone(pid int) error {
	for range 500 {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("restored process %d still there 5 s after SIGKILL", pid)
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func reportRestore(r *restoreResult, stateMB, warmup int) {
	host, _ := os.Hostname()
	fmt.Printf("bench (restore): stateful workload, %d MiB state, %d s warm-up; host %s, %s\n",
		stateMB, warmup, host, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  checkpoint image in store: %.2f GiB (checkpoint took %s)\n", float64(r.imageBytes)/(1<<30), r.checkpoint.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "cold start to first answer (shim)", r.cold.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", fmt.Sprintf("restore (shim, %d CRIU threads, median)", r.restoreThreads), r.restore.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "  the same with restore_threads = 1 (median)", r.restoreOneThread.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "  the same with restore_huge_pages = true", r.restoreHuge.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "restore, page cache dropped, prefetch on (median)", r.droppedCache.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "restore, page cache dropped, prefetch off (median)", r.droppedCacheNoPrefetch.Round(time.Millisecond))
	fmt.Printf("  %-44s %10s\n", "plain `criu restore` to first answer (median)", r.plainRestore.Round(time.Millisecond))
	speedup := float64(r.cold) / float64(r.restore)
	overhead := float64(r.restore)/float64(r.plainRestore) - 1
	fmt.Printf("  restore is %.1fx faster than cold start (goal >= 10x)\n", speedup)
	fmt.Printf("  shim overhead over plain criu restore: %+.0f%% (goal <= 10%%)\n", overhead*100)
	fmt.Printf("  restore phases: %s\n", strings.Join(strings.Fields(r.phases), " "))
	fmt.Printf("  where that restore's time went (s): %s\n", timelineList(r.timeline))
	if c := r.cri; c != nil {
		fmt.Printf("  through CRI, RunPodSandbox to first answer: cold %s, restored %s (%.1fx); restore's steps (s): %v\n",
			c.cold.Round(time.Millisecond), c.restore.Round(time.Millisecond), c.cold.Seconds()/c.restore.Seconds(), c.steps)
	}
	for _, n := range []int{1, 2, 4} {
		fmt.Printf("  %-44s %10s\n", fmt.Sprintf("%d restored at once, until all answer", n), r.parallel[n].Round(time.Millisecond))
	}
	fmt.Println("  floor, measured now on this machine:")
	for _, f := range r.floor {
		fmt.Printf("    %-14s %7.2f GB/s  image/bandwidth = %6.3f s  %s\n", f.Name, f.GBps(), float64(r.imageBytes)/(f.GBps()*1e9), f.Note)
	}
}

// writeRestoreJSON writes one run's raw results for the benchmark report
// (integration/bench/report): seconds, bytes and the floor measured now.
func writeRestoreJSON(path string, r *restoreResult, stateMB, warmup int) error {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	floors := map[string]float64{}
	for _, f := range r.floor {
		floors[f.Name+"_gbps"] = f.GBps()
	}
	doc := map[string]any{
		"kind": "cpu-restore", "date": time.Now().UTC().Format(time.RFC3339), "host": host,
		"kernel": strings.TrimSpace(string(kernel)), "cpus": runtime.NumCPU(),
		"command":     fmt.Sprintf("go run ./integration/bench -mode restore -state-mb %d -warmup %d", stateMB, warmup),
		"state_mib":   stateMB,
		"image_bytes": r.imageBytes,
		"cold_s":      r.cold.Seconds(), "checkpoint_s": r.checkpoint.Seconds(),
		"shim_restore_warm_s": r.restore.Seconds(), "shim_restore_warm_huge_s": r.restoreHuge.Seconds(),
		"restore_threads": r.restoreThreads, "restore_timeline_s": r.timeline, "shim_restore_warm_one_thread_s": r.restoreOneThread.Seconds(),
		"shim_restore_dropped_cache_s": r.droppedCache.Seconds(), "shim_restore_dropped_cache_no_prefetch_s": r.droppedCacheNoPrefetch.Seconds(),
		"plain_restore_warm_s": r.plainRestore.Seconds(), "floor": floors, "parallel_restore_s": parallelSeconds(r.parallel),
	}
	if c := r.cri; c != nil {
		doc["cri_cold_s"], doc["cri_restore_s"], doc["cri_restore_steps_s"] = c.cold.Seconds(), c.restore.Seconds(), c.steps
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func parallelSeconds(p map[int]time.Duration) map[string]float64 {
	out := map[string]float64{}
	for n, d := range p {
		out[strconv.Itoa(n)] = d.Seconds()
	}
	return out
}

// median of a non-empty list of durations.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// timelineOrder is restoreTimeline's keys in the order they happen.
var timelineOrder = []string{"ctr_run_to_shim", "shim_to_create", "create", "created_to_start", "start_to_restored", "restored_to_ctr", "ctr_to_answer"}

func timelineList(t map[string]float64) string {
	var parts []string
	for _, k := range timelineOrder {
		parts = append(parts, fmt.Sprintf("%s %.3f", k, t[k]))
	}
	return strings.Join(parts, ", ")
}
