package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// testRegistry is a real distribution registry on loopback, with TLS from
// a test CA and htpasswd auth, and the node configuration that reaches it.
type testRegistry struct {
	host   string // 127.0.0.1:port
	data   string // the registry's storage root
	config Config
}

const (
	testUser     = "gpusnap"
	testPassword = "s3cret-pass"
)

// startRegistry runs `registry serve` (distribution v3, installed by make
// deps) until the test ends.
func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the distribution registry that make deps installs (run without -short)")
	}
	bin, err := exec.LookPath("registry")
	if err != nil {
		t.Fatalf("the distribution registry is not installed (make deps): %v", err)
	}
	dir := t.TempDir()
	host := freeLoopbackAddr(t)
	caPEM, certFile, keyFile := writeTestTLS(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "htpasswd"), testUser+":"+string(hash)+"\n")
	data := filepath.Join(dir, "data")
	writeTestFile(t, filepath.Join(dir, "config.yml"), fmt.Sprintf(`version: 0.1
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

	// The node's configuration, as an operator writes it for containerd.
	hosts := filepath.Join(dir, "certs.d")
	writeTestFile(t, filepath.Join(hosts, host, "ca.pem"), string(caPEM))
	writeTestFile(t, filepath.Join(hosts, host, "hosts.toml"), fmt.Sprintf("server = \"https://%s\"\nca = %q\n",
		host, filepath.Join(hosts, host, "ca.pem")))
	creds := filepath.Join(dir, "config.json")
	writeCredentials(t, creds, host, testUser, testPassword)
	return &testRegistry{host: host, data: data, config: Config{HostsDir: hosts, Credentials: creds}}
}

// open is the test repository as the node reaches it.
func (reg *testRegistry) open(t *testing.T) *Remote {
	t.Helper()
	r, err := Open(context.Background(), reg.host+"/checkpoints/llm", reg.config)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeCredentials(t *testing.T, path, host, user, password string) {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	writeTestFile(t, path, fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth))
}

func freeLoopbackAddr(t *testing.T) string {
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

// writeTestTLS writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTestTLS(t *testing.T, dir string) (caPEM []byte, certFile, keyFile string) {
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
	writeTestFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})))
	writeTestFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

const testKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// publishTestCheckpoint publishes a signed checkpoint whose page image spans
// several chunks, plus a small and an empty file.
func publishTestCheckpoint(t *testing.T, store *storage.Store, pages []byte, key *storage.SigningKey) *storage.Checkpoint {
	t.Helper()
	st, err := store.Stage()
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(st.Dir(), "checkpoint", "pages-1.img"), string(pages))
	writeTestFile(t, filepath.Join(st.Dir(), "checkpoint", "inventory.img"), "inventory")
	writeTestFile(t, filepath.Join(st.Dir(), "rootfs-deleted.txt"), "")
	c, err := st.PublishSigned(&storage.Manifest{Key: testKey, GPUs: []storage.GPU{{Product: "NVIDIA H100 80GB HBM3"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testSigningKey(t *testing.T) (*storage.SigningKey, []*storage.PublicKey) {
	priv, pub, _, err := storage.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "key"), string(priv))
	writeTestFile(t, filepath.Join(dir, "key.pub"), string(pub))
	sk, err := storage.LoadSigningKey(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := storage.LoadTrustedKeys([]string{filepath.Join(dir, "key.pub")})
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func openStore(t *testing.T) *storage.Store {
	s, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPushPullRoundTrip: a checkpoint pushed from one store arrives in
// another byte for byte, signature verifying, and is found by its key.
func TestPushPullRoundTrip(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	key, trusted := testSigningKey(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, 2*ChunkSize+12345), key)
	remote := reg.open(t)
	pushed, err := remote.Push(ctx, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Uploaded < src.Size() || pushed.Ref != reg.host+"/checkpoints/llm:"+src.Name {
		t.Fatalf("push: %+v, want all of %d bytes uploaded to %s", pushed, src.Size(), src.Name)
	}

	tag, err := remote.Newest(ctx, testKey)
	if err != nil || tag != src.Name {
		t.Fatalf("Newest(key) = %q, %v; want %s", tag, err, src.Name)
	}
	dst := openStore(t)
	var progressed int64
	got, err := remote.Pull(ctx, tag, dst, Options{Parallel: 3, Progress: func(done, total int64) { progressed = done }})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawManifest(), src.RawManifest()) || progressed != src.Size() {
		t.Fatalf("pulled manifest differs or progress %d of %d", progressed, src.Size())
	}
	if err := got.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := got.VerifySignature(trusted); err != nil {
		t.Fatalf("signature after the pull: %v", err)
	}
	assertNoStaging(t, dst)

	// A second pull finds the checkpoint in the store and moves nothing.
	progressed = 0
	if _, err := remote.Pull(ctx, tag, dst, Options{Progress: func(done, total int64) { progressed = done }}); err != nil || progressed != 0 {
		t.Fatalf("second pull: %v, %d bytes moved", err, progressed)
	}
}

// TestPushUploadsOnlyChangedChunks: the next checkpoint of the same
// workload, one page region changed, uploads only the chunks that differ.
func TestPushUploadsOnlyChangedChunks(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	store := openStore(t)
	pages := randomBytes(t, 4*ChunkSize)
	first := publishTestCheckpoint(t, store, pages, nil)
	if _, err := remote.Push(ctx, first, Options{}); err != nil {
		t.Fatal(err)
	}
	copy(pages[ChunkSize+100:], randomBytes(t, 4096)) // one chunk changes
	second := publishTestCheckpoint(t, store, pages, nil)
	res, err := remote.Push(ctx, second, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The changed chunk and the new manifest.json; nothing else.
	if res.Uploaded > ChunkSize+int64(len(second.RawManifest())) {
		t.Fatalf("second push uploaded %d of %d bytes, want one chunk (%d) and the manifest", res.Uploaded, res.Bytes, ChunkSize)
	}
	tags, err := remote.Tags(ctx)
	if err != nil || len(tags) != 2 {
		t.Fatalf("tags %v, %v", tags, err)
	}
	if tag, err := remote.Newest(ctx, testKey); err != nil || tag != second.Name {
		t.Fatalf("Newest = %q, %v; want %s", tag, err, second.Name)
	}
}

// TestPullFailures: each bad case ends in a clear error and no checkpoint
// (and, except for a resumable transfer, nothing) in the store.
func TestPullFailures(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, ChunkSize+1), nil)
	if _, err := remote.Push(ctx, src, Options{}); err != nil {
		t.Fatal(err)
	}

	t.Run("missing tag", func(t *testing.T) {
		dst := openStore(t)
		_, err := remote.Pull(ctx, "fedcba9876543210-g000001", dst, Options{})
		if err == nil || !strings.Contains(err.Error(), "fedcba9876543210-g000001") {
			t.Fatalf("pull of a missing tag: %v", err)
		}
		assertNoStaging(t, dst)
	})
	t.Run("wrong credentials", func(t *testing.T) {
		cfg := reg.config
		cfg.Credentials = filepath.Join(t.TempDir(), "config.json")
		writeCredentials(t, cfg.Credentials, reg.host, testUser, "wrong")
		bad, err := Open(ctx, reg.host+"/checkpoints/llm", cfg)
		if err != nil {
			t.Fatal(err)
		}
		dst := openStore(t)
		_, err = bad.Pull(ctx, src.Name, dst, Options{})
		if err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Fatalf("pull with a wrong password: %v", err)
		}
		assertNoStaging(t, dst)
	})
	t.Run("CA not configured", func(t *testing.T) {
		cfg := reg.config
		cfg.HostsDir = t.TempDir()
		writeTestFile(t, filepath.Join(cfg.HostsDir, reg.host, "hosts.toml"), fmt.Sprintf("server = \"https://%s\"\n", reg.host))
		bad, err := Open(ctx, reg.host+"/checkpoints/llm", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Tags(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a registry whose CA the node does not trust: %v", err)
		}
	})
	t.Run("blob changed on the registry's disk", func(t *testing.T) {
		tamperBlobs(t, reg.data, ChunkSize)
		dst := openStore(t)
		_, err := remote.Pull(ctx, src.Name, dst, Options{})
		if err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("pull of a tampered chunk: %v", err)
		}
		assertNoStaging(t, dst)
	})
}

// TestPullResumes: a pull cut short keeps its whole chunks, and the next
// pull of the same checkpoint fetches only the rest.
func TestPullResumes(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, 6*ChunkSize), nil)
	if _, err := remote.Push(ctx, src, Options{}); err != nil {
		t.Fatal(err)
	}
	dst := openStore(t)
	cut, cancel := context.WithCancel(ctx)
	_, err := remote.Pull(cut, src.Name, dst, Options{Parallel: 1, Progress: func(done, total int64) {
		if done >= 3*ChunkSize {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cut pull: %v", err)
	}
	if _, err := dst.Get(src.Name); err == nil {
		t.Fatal("a cut pull left a visible checkpoint")
	}
	var first int64 = -1
	got, err := remote.Pull(ctx, src.Name, dst, Options{Progress: func(done, total int64) {
		if first < 0 {
			first = done
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if first < 3*ChunkSize {
		t.Fatalf("resumed pull started from %d bytes, want the %d the cut pull kept", first, 3*ChunkSize)
	}
	if err := got.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertNoStaging(t, dst)
}

// tamperBlobs flips a byte in every blob of size bytes the registry holds.
func tamperBlobs(t *testing.T, root string, size int64) {
	n := 0
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "data" && fi.Size() == size {
			b, _ := os.ReadFile(p)
			b[size/2] ^= 0xff
			os.WriteFile(p, b, 0o644)
			n++
		}
		return nil
	})
	if n == 0 {
		t.Fatalf("no blob of %d bytes under %s", size, root)
	}
}

func assertNoStaging(t *testing.T, s *storage.Store) {
	t.Helper()
	entries, _ := os.ReadDir(s.Root)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("store keeps %s after a pull", e.Name())
		}
	}
}
