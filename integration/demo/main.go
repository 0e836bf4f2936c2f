// Command demo is the project's end-to-end job on an embedded default: it
// starts a private containerd with the snapshot shim as a runtime handler,
// runs a container through the shim with ctr and a pod through CRI, prints
// what happened, and tears everything down.
//
//	make demo
package main

import (
	"fmt"
	"os"
	"strings"

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
	step("ctr run --runtime " + testbed.SnapshotRuntime)
	out, err := bed.Ctr("run", "--rm", "--runtime", testbed.SnapshotRuntime, testbed.BusyboxRef, "demo",
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
	step("checkpoint/restore: arrives with the checkpoint/restore work (issue 3)")
	return nil
}

func step(s string) { fmt.Println("==>", s) }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
