// Package testregistry runs a real distribution registry (v3, installed by
// make deps) on loopback for tests and benchmarks, with TLS from a test CA and htpasswd
// auth, and writes the node configuration that reaches it as an operator
// writes it for containerd: a hosts.toml directory and a docker-style
// credentials file.
package testregistry

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running registry and the node configuration for it.
type Registry struct {
	Host        string // 127.0.0.1:port
	Data        string // the registry's storage root
	HostsDir    string // containerd-style hosts.toml directory (server, CA)
	Credentials string // docker-style config.json with User's password
	Pid         int    // the registry process (Run only), for benchmarks' CPU accounting
}

// The account htpasswd knows.
const (
	User     = "gpusnap"
	Password = "s3cret-pass"
)

// Start runs `registry serve` until the test ends. Under -short the test is
// skipped; without the registry installed it fails.
func Start(t *testing.T) *Registry {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the distribution registry that make deps installs (run without -short)")
	}
	r, stop, err := Run(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return r
}

// Run starts `registry serve` with its files in dir (for benchmarks, which
// have no *testing.T); stop ends it.
func Run(dir string) (r *Registry, stop func(), err error) {
	bin, err := exec.LookPath("registry")
	if err != nil {
		return nil, nil, fmt.Errorf("the distribution registry is not installed (make deps): %w", err)
	}
	host, err := freeLoopbackAddr()
	if err != nil {
		return nil, nil, err
	}
	caPEM, certFile, keyFile, err := writeTLS(dir)
	if err != nil {
		return nil, nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
	if err != nil {
		return nil, nil, err
	}
	data := filepath.Join(dir, "data")
	hosts := filepath.Join(dir, "certs.d")
	creds := filepath.Join(dir, "config.json")
	files := map[string]string{
		filepath.Join(dir, "htpasswd"): User + ":" + string(hash) + "\n",
		filepath.Join(dir, "config.yml"): fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: test, path: %s}
`, data, host, certFile, keyFile, filepath.Join(dir, "htpasswd")),
		// The node's configuration, as an operator writes it for containerd.
		filepath.Join(hosts, host, "ca.pem"):     string(caPEM),
		filepath.Join(hosts, host, "hosts.toml"): fmt.Sprintf("server = \"https://%s\"\nca = %q\n", host, filepath.Join(hosts, host, "ca.pem")),
		creds:                                    credentials(host, User, Password),
	}
	for path, content := range files {
		if err := writeFile(path, content); err != nil {
			return nil, nil, err
		}
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	if err := waitListening(host); err != nil {
		stop()
		return nil, nil, fmt.Errorf("%w: %s", err, logs.String())
	}
	return &Registry{Host: host, Data: data, HostsDir: hosts, Credentials: creds, Pid: cmd.Process.Pid}, stop, nil
}

// WriteCredentials writes a docker-style config.json for host.
func WriteCredentials(t *testing.T, path, host, user, password string) {
	WriteFile(t, path, credentials(host, user, password))
}

func credentials(host, user, password string) string {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	return fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth)
}

// FreeLoopbackAddr is a loopback address nothing listens on (yet).
func FreeLoopbackAddr(t *testing.T) string {
	addr, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListening(host string) error {
	for range 100 {
		if c, err := net.Dial("tcp", host); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("registry did not listen on %s", host)
}

// writeTLS writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTLS(dir string) (caPEM []byte, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gpusnap test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := writeFile(certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}))); err != nil {
		return nil, "", "", err
	}
	if err := writeFile(keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))); err != nil {
		return nil, "", "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile, nil
}

// WriteFile writes data at path, creating its directory (0700, 0600).
func WriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := writeFile(path, data); err != nil {
		t.Fatal(err)
	}
}

func writeFile(path, data string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(data), 0o600)
}
