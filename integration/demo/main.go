// Command demo is the project's end-to-end job on an embedded default: it
// starts a private containerd with the snapshot shim as a runtime handler,
// runs a container through the shim with ctr and a pod through CRI, then
// checkpoints a warm stateful workload into a store and restores it into a
// new container, prints what happened, and tears everything down.
//
//	make demo
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

func main() {
	dir, err := os.MkdirTemp("/var/tmp", "snapshot-demo-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	step("starting a private containerd with the snapshot handler in " + dir)
	bed, err := testbed.Prepare(dir, "", nil)
	if err != nil {
		fail(err)
	}
	err = run(bed)
	left, stopErr := bed.Stop()
	step(fmt.Sprintf("stopped containerd; left behind: %d item(s)", len(left)))
	for _, l := range left {
		fmt.Println("   ", l)
	}
	if err == nil {
		err = stopErr
	}
	if err != nil {
		fail(err)
	}
}

func run(bed *testbed.Bed) error {
	step("ctr run --runtime " + containerdconfig.RuntimeType)
	out, err := bed.Ctr("run", "--rm", "--runtime", containerdconfig.RuntimeType, testbed.BusyboxRef, "demo",
		"sh", "-c", "echo hello from $(hostname), pid $$; uname -r")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	step("crictl runp --runtime snapshot (the path of a Kubernetes RuntimeClass)")
	pod := fmt.Sprintf(`{"metadata":{"name":"demo","namespace":"default","uid":"demo"},"log_directory":%q}`, bed.Dir+"/logs/demo")
	ctr := fmt.Sprintf(`{"metadata":{"name":"app"},"image":{"image":%q},"command":["sh","-c","echo app up; sleep 600"],"log_path":"app.log"}`, testbed.BusyboxRef)
	for name, body := range map[string]string{"pod.json": pod, "ctr.json": ctr} {
		if err := os.WriteFile(bed.Dir+"/"+name, []byte(body), 0o600); err != nil {
			return err
		}
	}
	podID, err := bed.Crictl("runp", "--runtime", "snapshot", bed.Dir+"/pod.json")
	if err != nil {
		return err
	}
	podID = strings.TrimSpace(podID)
	cid, err := bed.Crictl("create", podID, bed.Dir+"/ctr.json", bed.Dir+"/pod.json")
	if err != nil {
		return err
	}
	cid = strings.TrimSpace(cid)
	if _, err := bed.Crictl("start", cid); err != nil {
		return err
	}
	ip, _ := bed.Crictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", podID)
	fmt.Printf("    pod %.12s has IP %s in its own network namespace\n", podID, strings.TrimSpace(ip))
	out, err = bed.Crictl("exec", "--sync", cid, "sh", "-c", "echo exec in $(hostname): $(cat /proc/1/cmdline | tr '\\0' ' ')")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	return checkpointAndRestore(bed)
}

// checkpointAndRestore runs the stateful example through the shim with a
// store, checkpoints it once it is warm, and starts a second container of
// the same identity, which the shim restores from the store.
func checkpointAndRestore(bed *testbed.Bed) error {
	store := bed.Dir + "/store"
	options := bed.Dir + "/handler.toml"
	body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n", store, testbed.StatefulControlDir)
	if err := os.WriteFile(options, []byte(body), 0o600); err != nil {
		return err
	}
	step("handler options " + options + ":\n" + indent(body))
	for _, id := range []string{"warm", "restored"} {
		netns, remove, err := testbed.Netns("demo-" + id)
		if err != nil {
			return err
		}
		defer remove()
		step("ctr run " + id + " (stateful example: counter in memory, file in its writable layer, TCP socket, child process)")
		start := time.Now()
		if _, err := bed.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", options,
			"--with-ns", "network:"+netns, testbed.StatefulRef, id); err != nil {
			return err
		}
		answer, err := waitAnswer(bed, id, 30)
		if err != nil {
			return err
		}
		fmt.Printf("    first answer with count >= 30 after %s: %s", time.Since(start).Round(time.Millisecond), answer)
		status, _ := os.ReadFile("/run/containerd-shim-snapshot/" + id + "/snapshot-status")
		fmt.Print(indent("snapshot-status: " + string(status)))
		if id == "warm" {
			step("ctr tasks checkpoint warm (leave running; the shim publishes it to the store)")
			if _, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
				return err
			}
			out, _ := exec.Command("go", "run", "./cmd/gpusnap", "--store", store, "ls").CombinedOutput()
			fmt.Print(indent("gpusnap ls:\n" + string(out)))
		}
	}
	return nil
}

// waitAnswer polls the example's socket until its counter reaches count.
func waitAnswer(bed *testbed.Bed, id string, count int) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := bed.Ctr("tasks", "exec", "--exec-id", fmt.Sprint("q", time.Now().UnixNano()), id, "nc", "127.0.0.1", "8080")
		var n int
		if err == nil && strings.HasPrefix(out, "count=") {
			fmt.Sscanf(out, "count=%d", &n)
			if n >= count {
				return out, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("%s did not answer with count >= %d within 30s", id, count)
}

func step(s string) { fmt.Println("==>", s) }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
