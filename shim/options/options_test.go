package options

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr string // substring; empty means success
	}{
		{name: "empty gives defaults", body: ""},
		{name: "full", body: `store = "/var/lib/snap"
checkpoint = "auto"
restore = "required"
auto_checkpoint = "on-ready"
control_dir = "/run/snapshot"
criu_path = "/usr/local/sbin/criu"
ignore_env = ["HOSTNAME", "POD_IP"]
lock_timeout = "10s"
checkpoint_timeout = "2m"
restore_timeout = "1m"
signing_key = "/etc/gpusnap/handler.key"
trusted_keys = ["/etc/gpusnap/handler.pub", "/etc/gpusnap/old.pub"]
require_signature = true
encryption_key = "/etc/gpusnap/handler.enc"
decrypt_dir = "/var/lib/gpusnap-decrypted"`},
		{name: "relative encryption_key", body: `encryption_key = "handler.enc"`, wantErr: `encryption_key = "handler.enc": must be an absolute path`},
		{name: "relative decrypt_dir", body: `decrypt_dir = "plain"`, wantErr: `decrypt_dir = "plain": must be an absolute path`},
		{name: "empty decrypt_dir", body: `decrypt_dir = ""`, wantErr: `decrypt_dir = "": must be an absolute path`},
		{name: "decrypt_dir is the store", body: "store = \"/s\"\ndecrypt_dir = \"/s/\"", wantErr: `is inside the store "/s"`},
		{name: "decrypt_dir inside the store", body: "store = \"/s\"\ndecrypt_dir = \"/s/plain\"", wantErr: `is inside the store`},
		{name: "decrypt_dir beside the store", body: "store = \"/s\"\ndecrypt_dir = \"/s-plain\""},
		{name: "trusted keys without require", body: `trusted_keys = ["/etc/gpusnap/handler.pub"]`},
		{name: "require_signature without trusted_keys", body: `require_signature = true`, wantErr: `require_signature = true needs trusted_keys`},
		{name: "require_signature with empty trusted_keys", body: "require_signature = true\ntrusted_keys = []", wantErr: `needs trusted_keys`},
		{name: "relative signing_key", body: `signing_key = "handler.key"`, wantErr: `signing_key = "handler.key": must be an absolute path`},
		{name: "relative trusted key", body: `trusted_keys = ["/etc/a.pub", "b.pub"]`, wantErr: `trusted_keys: "b.pub": must be an absolute path`},
		{name: "empty trusted key", body: `trusted_keys = [""]`, wantErr: `trusted_keys: "": must be an absolute path`},
		{name: "trusted_keys not a list", body: `trusted_keys = "/etc/a.pub"`, wantErr: `trusted_keys`},
		{name: "unknown key", body: `stor = "/x"`, wantErr: `unknown key "stor"`},
		{name: "bad restore", body: `restore = "sometimes"`, wantErr: `restore = "sometimes": must be one of auto, required, never`},
		{name: "bad auto_checkpoint", body: `auto_checkpoint = "yes"`, wantErr: `auto_checkpoint = "yes"`},
		{name: "relative store", body: `store = "snap"`, wantErr: `store = "snap": must be an absolute path`},
		{name: "bad duration", body: `lock_timeout = "soon"`, wantErr: `lock_timeout`},
		{name: "negative duration", body: `restore_timeout = "-1s"`, wantErr: `must be positive`},
		{name: "wrong type", body: `store = 3`, wantErr: `store`},
		{name: "checkpoint path", body: `store = "/s"` + "\n" + `checkpoint = "../x"`, wantErr: `checkpoint = "../x"`},
		{name: "required without store", body: `restore = "required"`, wantErr: `needs a store`},
		{name: "on-ready without control_dir", body: `store = "/s"` + "\n" + `auto_checkpoint = "on-ready"`, wantErr: `needs store and control_dir`},
		{name: "not toml", body: `store = `, wantErr: `/etc/snap.toml`},
		{name: "restore_threads 64", body: `restore_threads = 64`},
		{name: "negative restore_threads", body: `restore_threads = -1`, wantErr: `restore_threads = -1: must be 0 (one per CPU, at most 16) to 64`},
		{name: "too many restore_threads", body: `restore_threads = 65`, wantErr: `restore_threads = 65`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Parse([]byte(tt.body), "/etc/snap.toml")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got options %+v, want error containing %q", o, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, want := range []string{tt.wantErr, "/etc/snap.toml"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	o, err := Parse([]byte("store = \"/s\"\nlock_timeout = \"10s\"\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if o.Store != "/s" || o.LockTimeout.Duration != 10*time.Second || o.Restore != RestoreAuto || o.Checkpoint != CheckpointAuto {
		t.Fatalf("unexpected options: %+v", o)
	}
	if o.RestoreTimeout.Duration != Default().RestoreTimeout.Duration {
		t.Errorf("restore_timeout default lost: %v", o.RestoreTimeout)
	}
	if o.SigningKey != "" || o.TrustedKeys != nil || o.RequireSignature {
		t.Errorf("signatures are on by default: %+v", o)
	}
	if o.EncryptionKey != "" || o.DecryptDir != DefaultDecryptDir {
		t.Errorf("encryption defaults: key %q, decrypt_dir %q", o.EncryptionKey, o.DecryptDir)
	}
	o, err = Parse([]byte("signing_key = \"/k/a.key\"\ntrusted_keys = [\"/k/a.pub\"]\nrequire_signature = true\n"), "x")
	if err != nil || o.SigningKey != "/k/a.key" || len(o.TrustedKeys) != 1 || o.TrustedKeys[0] != "/k/a.pub" || !o.RequireSignature {
		t.Fatalf("signature options: %+v, %v", o, err)
	}
}

func TestLoadMissingFileNamesPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing.toml")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("want error naming %s, got %v", p, err)
	}
	if err := os.WriteFile(p, []byte("restore = \"never\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Load(p)
	if err != nil || o.Restore != RestoreNever || o.Source != p {
		t.Fatalf("Load = %+v, %v", o, err)
	}
}

func TestCacheDirChecks(t *testing.T) {
	for body, want := range map[string]string{
		"store = \"/s\"\ncache_dir = \"/s/cache\"\n":                       "overlap",
		"store = \"/s\"\ncache_dir = \"/c\"\ndecrypt_dir = \"/c/plain\"\n": "inside cache_dir",
		"cache_dir = \"relative\"\n":                                       "must be an absolute path",
	} {
		if _, err := Parse([]byte(body), "test.toml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", body, err, want)
		}
	}
	if _, err := Parse([]byte("store = \"/s\"\ncache_dir = \"/c\"\n"), "test.toml"); err != nil {
		t.Errorf("a separate cache_dir: %v", err)
	}
}

func TestCRIURestoreThreads(t *testing.T) {
	for _, tt := range []struct{ set, cpus, want int }{
		{set: 0, cpus: 2, want: 2},
		{set: 0, cpus: 1, want: 1},
		{set: 0, cpus: 32, want: DefaultRestoreThreadsMax},
		{set: 0, cpus: 0, want: 1},
		{set: 1, cpus: 32, want: 1},
		{set: 16, cpus: 2, want: 16},
	} {
		o := Default()
		o.RestoreThreads = tt.set
		if got := o.CRIURestoreThreads(tt.cpus); got != tt.want {
			t.Errorf("restore_threads = %d on %d CPUs: %d threads, want %d", tt.set, tt.cpus, got, tt.want)
		}
	}
}

// TestCRIURestorePages: unset, restore_huge_pages follows the checkpoint
// (on for a container given GPUs) and restore_populate the page size (on
// with 4 KiB pages only); set, each is obeyed.
func TestCRIURestorePages(t *testing.T) {
	for _, tt := range []struct {
		toml           string
		gpu            bool
		huge, populate bool
	}{
		{"", false, false, true},
		{"", true, true, false},
		{"restore_huge_pages = false", true, false, true},
		{"restore_huge_pages = true", false, true, false},
		{"restore_populate = false", false, false, false},
		{"restore_populate = true", true, true, true},
		{"restore_huge_pages = true\nrestore_populate = true", false, true, true},
	} {
		o, err := Parse([]byte(tt.toml), "test")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		huge := o.CRIURestoreHugePages(tt.gpu)
		if populate := o.CRIURestorePopulate(huge); huge != tt.huge || populate != tt.populate {
			t.Errorf("%q, gpu %v: huge pages %v, populate %v; want %v, %v", tt.toml, tt.gpu, huge, populate, tt.huge, tt.populate)
		}
	}
}

func TestValueKind(t *testing.T) {
	for key, want := range map[string]string{
		"store": KindString, "lock_timeout": KindString, "restore_huge_pages": KindBool, "restore_populate": KindBool, "require_signature": KindBool,
		"restore_threads": KindInt, "prefetch_readers": KindInt, "ignore_env": KindList, "trusted_keys": KindList,
		"stor": "", "": "", "-": "",
	} {
		if got := ValueKind(key); got != want {
			t.Errorf("ValueKind(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestRegistryChecks(t *testing.T) {
	for body, want := range map[string]string{
		"push = \"on-checkpoint\"\n": `push = "on-checkpoint" needs registry`,
		"store = \"/s\"\nregistry = \"r.example:5000/ck\"\npush = \"always\"\n":                 `push = "always": must be one of off, on-checkpoint`,
		"store = \"/s\"\nregistry = \"r.example/ck\"\npull = \"eager\"\n":                       `pull = "eager": must be one of on-demand, background, off`,
		"registry = \"r.example/ck\"\n":                                                         "needs a store",
		"store = \"/s\"\nregistry = \"r.example\"\n":                                            "must be host[:port]/repository",
		"store = \"/s\"\nregistry = \"r.example/ck:latest\"\n":                                  "without a scheme, tag or digest",
		"store = \"/s\"\nregistry = \"https://r.example/ck\"\n":                                 "without a scheme, tag or digest",
		"store = \"/s\"\nregistry = \"r.example/ck\"\nregistry_credentials = \"config.json\"\n": "registry_credentials = \"config.json\": must be an absolute path",
	} {
		if _, err := Parse([]byte(body), "test.toml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", body, err, want)
		}
	}
	o, err := Parse([]byte("store = \"/s\"\nregistry = \"127.0.0.1:5000/checkpoints/llm\"\npush = \"on-checkpoint\"\n"), "test.toml")
	if err != nil || o.Pull != PullOnDemand || o.RegistryHostsDir != DefaultRegistryHostsDir {
		t.Errorf("registry with defaults: %+v, %v", o, err)
	}
}
