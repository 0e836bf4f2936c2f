package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
)

func init() {
	commands["metrics"] = &command{
		summary: "Print the node's restore and checkpoint metrics in the Prometheus text format, computed\n" +
			"from the shim's event files; with --listen, serve them at /metrics (and /healthz) until\n" +
			"SIGTERM. Counters count the events still on disk, so they reset when a day's file is\n" +
			"pruned; gpusnap_events_oldest_timestamp_seconds says since when they count.",
		setup: func(fs *flag.FlagSet) runFunc {
			dir := eventsDirFlag(fs)
			listen := fs.String("listen", "", "serve on `ADDR` (host:port) instead of printing once")
			return func(e *env, args []string) int { return runMetrics(e, args, *dir, *listen) }
		},
	}
}

// eventsDirFlag adds --events-dir, shared by metrics and status.
func eventsDirFlag(fs *flag.FlagSet) *string {
	return fs.String("events-dir", events.DefaultDir, "the shim's events `DIR`")
}

func runMetrics(e *env, args []string, dir, listen string) int {
	if len(args) > 0 {
		return e.usageErrorf("takes no arguments, got %q", args)
	}
	if e.json {
		return e.usageErrorf("writes the Prometheus text format; --json does not apply")
	}
	if listen != "" {
		return serveMetrics(e, dir, listen)
	}
	evts, err := events.Read(dir, time.Time{})
	if err != nil {
		return e.errorf("%v", err)
	}
	if !exists(dir) {
		fmt.Fprintf(e.stderr, "gpusnap metrics: %s does not exist: no events recorded yet\n", dir)
	}
	if err := events.WriteMetrics(e.stdout, evts); err != nil {
		return e.errorf("write output: %v", err)
	}
	return exitOK
}

// serveMetrics serves /metrics, read from the event files at each scrape
// (promhttp negotiates the format: text, or protobuf for a scraper that
// asks), and /healthz until SIGTERM or SIGINT.
func serveMetrics(e *env, dir, addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return e.errorf("%v", err)
	}
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(events.NewCollector(func() ([]events.Event, error) { return events.Read(dir, time.Time{}) }))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(e.stderr, "gpusnap metrics: serving the events of %s on http://%s/metrics\n", dir, ln.Addr())

	select {
	case err := <-served:
		return e.errorf("%v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return e.errorf("shutting down: %v", err)
	}
	return exitOK
}
