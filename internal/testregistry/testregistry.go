// Package testregistry runs a real distribution registry (v3, installed by
// make deps) on loopback for tests, with TLS from a test CA and htpasswd
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
	bin, err := exec.LookPath("registry")
	if err != nil {
		t.Fatalf("the distribution registry is not installed (make deps): %v", err)
	}
	dir := t.TempDir()
	host := FreeLoopbackAddr(t)
	caPEM, certFile, keyFile := writeTLS(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, filepath.Join(dir, "htpasswd"), User+":"+string(hash)+"\n")
	data := filepath.Join(dir, "data")
	WriteFile(t, filepath.Join(dir, "config.yml"), fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: test, path: %s}
`, data, host, certFile, keyFile, filepath.Join(dir, "htpasswd")))
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, host, &logs)

	hosts := filepath.Join(dir, "certs.d")
	WriteFile(t, filepath.Join(hosts, host, "ca.pem"), string(caPEM))
	WriteFile(t, filepath.Join(hosts, host, "hosts.toml"), fmt.Sprintf("server = \"https://%s\"\nca = %q\n",
		host, filepath.Join(hosts, host, "ca.pem")))
	creds := filepath.Join(dir, "config.json")
	WriteCredentials(t, creds, host, User, Password)
	return &Registry{Host: host, Data: data, HostsDir: hosts, Credentials: creds}
}

// WriteCredentials writes a docker-style config.json for host.
func WriteCredentials(t *testing.T, path, host, user, password string) {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	WriteFile(t, path, fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth))
}

// FreeLoopbackAddr is a loopback address nothing listens on (yet).
func FreeLoopbackAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t *testing.T, host string, logs *bytes.Buffer) {
	for range 100 {
		if c, err := net.Dial("tcp", host); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("registry did not listen on %s: %s", host, logs)
}

// writeTLS writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTLS(t *testing.T, dir string) (caPEM []byte, certFile, keyFile string) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gpusnap test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	WriteFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})))
	WriteFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// WriteFile writes data at path, creating its directory (0700, 0600).
func WriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
