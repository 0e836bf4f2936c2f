package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

const (
	// nodeName is the kubelet's node: the scheduler binds pods to it, and
	// pods may set it themselves.
	nodeName = "snapshot-node"
	// handler is the bed's containerd runtime handler for this shim, and the
	// RuntimeClass that names it (contrib/kubernetes/runtimeclass.yaml).
	handler = "snapshot"
	// nodeLabel is what the bootstrap DaemonSet sets on a ready node; the
	// RuntimeClass's scheduling.nodeSelector asks for it.
	nodeLabel = "gpusnap.io/enabled"
	// serviceCIDR must not overlap the bed's pod subnet (10.88.77.0/24).
	serviceCIDR = "10.96.0.0/24"
	manifests   = "../../contrib/kubernetes"
)

// kubeletSysctls are the kernel settings the kubelet sets on its node when
// protectKernelDefaults is off (it refuses to start on a node that differs
// when it is on): the test puts back what was there.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// Cluster is a single-node Kubernetes on a test bed: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a kubelet whose container
// runtime is the bed's containerd (CRI). Deployments work as on a cluster:
// the controller-manager makes their ReplicaSets' pods, the scheduler binds
// them to the node.
type Cluster struct {
	Dir         string
	Bed         *testbed.Bed
	Client      *kubernetes.Clientset
	Config      *rest.Config
	KubeletRoot string
	// PodLogs is the kubelet's podLogsDir.
	PodLogs string

	etcd, apiserver, controllerManager, scheduler, kubelet *proc
	// What the kubelet may change outside its root directory, as it was.
	sysctls              map[string]string
	logLinksBefore       map[string]bool
	containerLogsExisted bool
	devicePluginsExisted bool
	chainsBefore         map[string]bool
}

// proc is one piece of the cluster, started with its log in a file.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	exited        chan struct{}
	err           error
}

func startProc(name, logPath string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a killed test run must not leave the cluster behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// failed wraps err with the tail of the process's log.
func (p *proc) failed(err error) error {
	return fmt.Errorf("%s: %w; last lines of %s:\n%s", p.name, err, p.logPath, tail(p.logPath, 40))
}

// running returns an error if the process has exited.
func (p *proc) running() error {
	select {
	case <-p.exited:
		return p.failed(fmt.Errorf("exited: %v", p.err))
	default:
		return nil
	}
}

// stop sends SIGTERM, then SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop on SIGTERM within %s", p.name, timeout)
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(data), n)
}

func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls cond every interval until it returns true, an error, or
// timeout; p (if not nil) must keep running meanwhile.
func waitUntil(p *proc, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p != nil {
			if err := p.running(); err != nil {
				return err
			}
		}
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			err := fmt.Errorf("%s: not within %s (last error: %v)", what, timeout, last)
			if p != nil {
				return p.failed(err)
			}
			return err
		}
		time.Sleep(interval)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// nodeIP is the source address of the default route, the address the
// kubelet reports and the apiserver reaches it at. Dialling UDP sends
// nothing; it only picks the route.
func nodeIP() (string, error) {
	c, err := net.Dial("udp4", "203.0.113.1:9")
	if err != nil {
		return "", fmt.Errorf("no default route for the node IP: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// StartCluster starts etcd, kube-apiserver and the kubelet in dir, against
// the bed's CRI socket, and waits until the node is Ready and the
// RuntimeClass exists. On error the cluster is stopped again.
func StartCluster(dir string, bed *testbed.Bed) (_ *Cluster, err error) {
	c := &Cluster{Dir: dir, Bed: bed, KubeletRoot: filepath.Join(dir, "kubelet"), PodLogs: filepath.Join(dir, "pod-logs"),
		sysctls: map[string]string{}}
	for _, d := range []string{dir, c.KubeletRoot, c.PodLogs, filepath.Join(dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	for _, s := range kubeletSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			c.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	c.logLinksBefore = testbed.DirNames(containerLogs)
	c.containerLogsExisted = exists(containerLogs)
	c.devicePluginsExisted = exists(devicePlugins)
	c.chainsBefore = kubeChains()
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	ports := map[string]int{}
	for _, name := range []string{"etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kubelet"} {
		if ports[name], err = freePort(); err != nil {
			return nil, err
		}
	}
	ip, err := nodeIP()
	if err != nil {
		return nil, err
	}

	pki, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, err
	}
	serving, err := pki.issue("apiserver", "kube-apiserver", nil, "127.0.0.1", "localhost", "kubernetes",
		"kubernetes.default", "kubernetes.default.svc", "10.96.0.1")
	if err != nil {
		return nil, err
	}
	// The apiserver's client certificate for kubelet connections (exec,
	// logs); the kubelet accepts any client certificate of the CA.
	toKubelet, err := pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		return nil, err
	}
	kubeletCert, err := pki.issue("kubelet", "system:node:"+nodeName, []string{"system:nodes"})
	if err != nil {
		return nil, err
	}
	admin, err := pki.issue("admin", "snapshot-test-admin", []string{"system:masters"})
	if err != nil {
		return nil, err
	}
	// The users the RBAC bootstrap policy gives their components' roles.
	controllerManager, err := pki.issue("controller-manager", "system:kube-controller-manager", nil)
	if err != nil {
		return nil, err
	}
	scheduler, err := pki.issue("scheduler", "system:kube-scheduler", nil)
	if err != nil {
		return nil, err
	}
	saKey, saPub, err := pki.serviceAccountKeys()
	if err != nil {
		return nil, err
	}

	// etcd: plain HTTP on loopback, fsync off (test data).
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports["etcd-client"])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports["etcd-peer"])
	c.etcd, err = startProc("etcd", filepath.Join(dir, "etcd.log"), "etcd", "--name", "test",
		"--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "test="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitUntil(c.etcd, 30*time.Second, 100*time.Millisecond, "etcd healthy", func() (bool, error) {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("/health: %s", resp.Status)
	}); err != nil {
		return nil, err
	}

	server := fmt.Sprintf("https://127.0.0.1:%d", ports["apiserver"])
	c.apiserver, err = startProc("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), "kube-apiserver",
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports["apiserver"]),
		// The apiserver is on loopback only: no endpoints for the
		// kubernetes Service (nothing in a pod could reach them).
		"--endpoint-reconciler-type", "none",
		"--tls-cert-file", serving.CertFile, "--tls-private-key-file", serving.KeyFile,
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--client-ca-file", pki.CAFile,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", serviceCIDR,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--kubelet-client-certificate", toKubelet.CertFile, "--kubelet-client-key", toKubelet.KeyFile,
		"--kubelet-preferred-address-types", "InternalIP",
		// The bootstrap DaemonSet (dry run) has privileged containers.
		"--allow-privileged",
		"--profiling=false", "--v=1")
	if err != nil {
		return nil, err
	}
	c.Config = &rest.Config{Host: server, QPS: 100, Burst: 200, Timeout: 60 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAFile: pki.CAFile, CertData: admin.CertPEM, KeyData: admin.KeyPEM}}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if err := pki.kubeconfig(filepath.Join(dir, "admin.kubeconfig"), server, admin); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := waitUntil(c.apiserver, 90*time.Second, 250*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, fmt.Errorf("%v: %s", err, body)
	}); err != nil {
		return nil, err
	}

	// What the controller-manager creates, created here at once so pods
	// need not wait for it: the default ServiceAccount (pods are refused
	// without it) and the root CA bundle that the kubelet projects into
	// each pod's service account volume.
	if _, err := c.Client.CoreV1().ServiceAccounts("default").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating the default ServiceAccount: %w", err)
	}
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		return nil, err
	}
	if _, err := c.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": string(caPEM)}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating kube-root-ca.crt: %w", err)
	}
	// The RuntimeClass as shipped (contrib/kubernetes/runtimeclass.yaml).
	rc, err := runtimeClassManifest()
	if err != nil {
		return nil, err
	}
	if rc.Name != handler || rc.Handler != handler {
		return nil, fmt.Errorf("%s/runtimeclass.yaml: RuntimeClass %q with handler %q, the test expects %q", manifests, rc.Name, rc.Handler, handler)
	}
	if _, err := c.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating RuntimeClass %s: %w", rc.Name, err)
	}

	if err := c.startControllers(server, pki, saKey, controllerManager, scheduler, ports["controller-manager"], ports["scheduler"]); err != nil {
		return nil, err
	}

	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := pki.kubeconfig(kubeconfig, server, kubeletCert); err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(config, []byte(c.kubeletConfig(pki.CAFile, ports["kubelet"])), 0o600); err != nil {
		return nil, err
	}
	c.kubelet, err = startProc("kubelet", filepath.Join(dir, "kubelet.log"), "kubelet",
		"--config", config, "--kubeconfig", kubeconfig,
		"--root-dir", c.KubeletRoot, "--cert-dir", filepath.Join(c.KubeletRoot, "pki"),
		"--hostname-override", nodeName, "--node-ip", ip, "--v=2")
	if err != nil {
		return nil, err
	}
	if err := waitUntil(c.kubelet, 120*time.Second, 500*time.Millisecond, "node "+nodeName+" Ready", func() (bool, error) {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, fmt.Errorf("Ready=%s: %s: %s", cond.Status, cond.Reason, cond.Message)
			}
		}
		return false, errors.New("no Ready condition yet")
	}); err != nil {
		return nil, err
	}
	// The bootstrap DaemonSet's last step: advertise the node to the
	// RuntimeClass (its nodeSelector is merged into every pod that uses it,
	// and the kubelet refuses pods whose nodeSelector its node fails).
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, nodeLabel)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("labelling the node: %w", err)
	}
	return c, nil
}

// startControllers starts kube-controller-manager and kube-scheduler on
// loopback, each with its own kubeconfig and client certificate of the
// cluster's CA, and waits until both answer /healthz. The controller-manager
// runs its controllers under their own service accounts, as kubeadm sets it
// up, signing their tokens with the apiserver's service account key.
func (c *Cluster) startControllers(server string, pki *pki, saKey string, cm, sched keyPair, cmPort, schedPort int) error {
	cmConfig := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	if err := pki.kubeconfig(cmConfig, server, cm); err != nil {
		return err
	}
	schedConfig := filepath.Join(c.Dir, "scheduler.kubeconfig")
	if err := pki.kubeconfig(schedConfig, server, sched); err != nil {
		return err
	}
	var err error
	c.controllerManager, err = startProc("kube-controller-manager", filepath.Join(c.Dir, "kube-controller-manager.log"), "kube-controller-manager",
		"--kubeconfig", cmConfig, "--authentication-kubeconfig", cmConfig, "--authorization-kubeconfig", cmConfig,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(cmPort), "--cert-dir", filepath.Join(c.Dir, "controller-manager-certs"),
		"--leader-elect=false", "--use-service-account-credentials",
		"--service-account-private-key-file", saKey, "--root-ca-file", pki.CAFile,
		"--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	c.scheduler, err = startProc("kube-scheduler", filepath.Join(c.Dir, "kube-scheduler.log"), "kube-scheduler",
		"--kubeconfig", schedConfig, "--authentication-kubeconfig", schedConfig, "--authorization-kubeconfig", schedConfig,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(schedPort), "--cert-dir", filepath.Join(c.Dir, "scheduler-certs"),
		"--leader-elect=false", "--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	// Their serving certificates are self-signed (--cert-dir); /healthz
	// needs no client certificate.
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, h := range []struct {
		p    *proc
		port int
	}{{c.controllerManager, cmPort}, {c.scheduler, schedPort}} {
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", h.port)
		if err := waitUntil(h.p, 90*time.Second, 250*time.Millisecond, h.p.name+" /healthz", func() (bool, error) {
			resp, err := insecure.Get(url)
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			return resp.StatusCode == http.StatusOK, fmt.Errorf("/healthz: %s", resp.Status)
		}); err != nil {
			return err
		}
	}
	return nil
}

// kubeletConfig is the KubeletConfiguration for this machine (see
// /work/shared/FACTS.md): cgroup v1, cgroupfs, no QoS cgroups, swap allowed,
// the bed's containerd as runtime, no static pods.
func (c *Cluster) kubeletConfig(caFile string, port int) string {
	endpoint := "unix://" + c.Bed.Socket
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %[1]q
imageServiceEndpoint: %[1]q
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
staticPodPath: ""
port: %[2]d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[3]q}
authorization:
  mode: AlwaysAllow
# The KUBE-IPTABLES-HINT, KUBE-FIREWALL and canary chains are for other
# components (kube-proxy); the kubelet would leave them on the host.
makeIPTablesUtilChains: false
podLogsDir: %[4]q
volumePluginDir: %[5]q
# A test node: never evict or garbage-collect the imported images because
# the build machine's disk is fuller than a real node's would be.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
serializeImagePulls: false
`, endpoint, port, caFile, c.PodLogs, filepath.Join(c.KubeletRoot, "volume-plugins"))
}

func runtimeClassManifest() (*nodev1.RuntimeClass, error) {
	data, err := os.ReadFile(filepath.Join(manifests, "runtimeclass.yaml"))
	if err != nil {
		return nil, err
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("runtimeclass.yaml: %w", err)
	}
	rc, ok := obj.(*nodev1.RuntimeClass)
	if !ok {
		return nil, fmt.Errorf("runtimeclass.yaml holds a %T", obj)
	}
	return rc, nil
}

// DeleteAllPods deletes every pod and waits until the API has none left,
// that is until the kubelet confirmed each one stopped.
func (c *Cluster) DeleteAllPods(ctx context.Context, timeout time.Duration) error {
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if err := c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return waitUntil(c.kubelet, timeout, 250*time.Millisecond, "pods deleted", func() (bool, error) {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var names []string
		for _, p := range pods.Items {
			names = append(names, p.Namespace+"/"+p.Name+" ("+string(p.Status.Phase)+")")
		}
		return len(names) == 0, fmt.Errorf("left: %s", strings.Join(names, ", "))
	})
}

// WaitSandboxesRemoved waits until the kubelet's garbage collection (once a
// minute) has removed every pod sandbox of deleted pods from the runtime.
func (c *Cluster) WaitSandboxesRemoved(timeout time.Duration) error {
	return waitUntil(c.kubelet, timeout, time.Second, "kubelet removes the sandboxes of deleted pods", func() (bool, error) {
		out, err := c.Bed.Crictl("pods", "-q")
		if err != nil {
			return false, err
		}
		return strings.TrimSpace(out) == "", fmt.Errorf("sandboxes left: %s", strings.Fields(out))
	})
}

// Leftovers lists what the kubelet left on the node beyond the bed's own
// checks: mounts under the cluster's directory (pod volumes; the kubelet's
// bind mount of its root directory onto itself, made to share mounts, is
// its own and goes with it), container log links it made in
// /var/log/containers, and iptables chains.
func (c *Cluster) Leftovers() []string {
	var left []string
	for _, m := range mountsUnder(c.Dir) {
		if m != c.KubeletRoot {
			left = append(left, "mount "+m)
		}
	}
	for name := range testbed.DirNames(containerLogs) {
		if !c.logLinksBefore[name] {
			left = append(left, "container log link "+filepath.Join(containerLogs, name))
		}
	}
	for chain := range kubeChains() {
		if !c.chainsBefore[chain] {
			left = append(left, "iptables chain "+chain)
		}
	}
	return left
}

// Stop deletes the pods, stops the kubelet, the apiserver and etcd, and
// puts back what the kubelet changed on the node. It returns what the
// kubelet left behind (before cleaning it) and any error stopping.
func (c *Cluster) Stop() ([]string, error) {
	var errs []string
	// The controllers go first, so that no ReplicaSet makes new pods
	// while the pods are deleted.
	for _, p := range []*proc{c.controllerManager, c.scheduler} {
		if err := p.stop(20 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if c.apiserver != nil && c.kubelet != nil && c.apiserver.running() == nil && c.kubelet.running() == nil {
		ctx := context.Background()
		if err := c.DeleteAllPods(ctx, 2*time.Minute); err != nil {
			errs = append(errs, err.Error())
		} else if err := c.WaitSandboxesRemoved(150 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, p := range []*proc{c.kubelet, c.apiserver, c.etcd} {
		if err := p.stop(20 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	left := c.Leftovers()
	// Clean up regardless, so one failed run cannot poison the next.
	mounts := mountsUnder(c.Dir)
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	for name := range testbed.DirNames(containerLogs) {
		if !c.logLinksBefore[name] {
			os.Remove(filepath.Join(containerLogs, name))
		}
	}
	if !c.containerLogsExisted {
		os.Remove(containerLogs) // only if empty
	}
	// The device plugin socket's directory is a constant of the kubelet,
	// outside its root directory.
	if !c.devicePluginsExisted {
		os.Remove(filepath.Join(devicePlugins, "kubelet.sock"))
		os.Remove(devicePlugins)
		os.Remove(filepath.Dir(devicePlugins)) // only if empty
	}
	for s, v := range c.sysctls {
		if cur, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil && strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Sprintf("restoring %s=%s: %v", s, v, err))
			}
		}
	}
	var err error
	if len(errs) > 0 {
		err = errors.New(strings.Join(errs, "; "))
	}
	return left, err
}

// printLogs prints the tails of the cluster's logs, for failed runs.
func (c *Cluster) printLogs() {
	for _, p := range []*proc{c.kubelet, c.apiserver, c.controllerManager, c.scheduler} {
		if p != nil {
			fmt.Fprintf(os.Stderr, "kube: last lines of %s:\n%s\n", p.logPath, tail(p.logPath, 30))
		}
	}
	fmt.Fprintf(os.Stderr, "kube: containerd's log:\n%s\n", lastLines(c.Bed.Log(), 30))
}

// Exec runs a command in a pod's container through the apiserver, the
// kubelet and CRI's streaming server, as kubectl exec does.
func (c *Cluster) Exec(ctx context.Context, ns, pod, container string, command ...string) (string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return stdout.String(), fmt.Errorf("exec %v in %s/%s: %w: %s", command, ns, pod, err, stderr.String())
	}
	return stdout.String(), nil
}

// Paths of the kubelet that are constants, outside its root directory:
// where it links container logs, and its device plugin socket's directory.
const (
	containerLogs = "/var/log/containers"
	devicePlugins = "/var/lib/kubelet/device-plugins"
)

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// kubeChains lists the KUBE-* chains of iptables and ip6tables, as
// "command table chain".
func kubeChains() map[string]bool {
	chains := map[string]bool{}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd).Output()
		if err != nil {
			continue
		}
		table := ""
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "*") {
				table = line[1:]
			}
			if strings.HasPrefix(line, ":KUBE-") {
				chains[cmd+" "+table+" "+strings.Fields(line[1:])[0]] = true
			}
		}
	}
	return chains
}

func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}
