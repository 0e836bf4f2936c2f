package options

import (
	"path/filepath"
	"testing"
)

// FuzzParse: any TOML either is refused with an error or gives options
// that pass validation (known policies, positive timeouts, absolute key
// paths, no required signature without a key to check it with).
func FuzzParse(f *testing.F) {
	f.Add([]byte("store = \"/var/lib/store\"\nrestore = \"required\"\nlock_timeout = \"30s\"\n"))
	f.Add([]byte("restore = \"sometimes\"\n"))
	f.Add([]byte("ignore_env = [\"A\", \"B*\"]\nrestore_huge_pages = false\n"))
	f.Add([]byte("[table]\nx = 1\n"))
	f.Add([]byte("signing_key = \"/etc/gpusnap/h.key\"\ntrusted_keys = [\"/etc/gpusnap/h.pub\"]\nrequire_signature = true\n"))
	f.Add([]byte("encryption_key = \"/etc/gpusnap/h.enc\"\ndecrypt_dir = \"/run/plain\"\n"))
	f.Add([]byte("require_signature = true\ntrusted_keys = [\"h.pub\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Parse(data, "fuzz.toml")
		if err != nil {
			return
		}
		switch o.Restore {
		case RestoreAuto, RestoreRequired, RestoreNever:
		default:
			t.Fatalf("accepted restore = %q", o.Restore)
		}
		if o.LockTimeout.Duration <= 0 || o.RestoreTimeout.Duration <= 0 || o.CheckpointTimeout.Duration <= 0 {
			t.Fatalf("accepted a non-positive timeout: %+v", o)
		}
		if o.RequireSignature && len(o.TrustedKeys) == 0 {
			t.Fatalf("accepted require_signature without trusted_keys: %+v", o)
		}
		if !filepath.IsAbs(o.DecryptDir) || (o.EncryptionKey != "" && !filepath.IsAbs(o.EncryptionKey)) {
			t.Fatalf("accepted decrypt_dir = %q, encryption_key = %q", o.DecryptDir, o.EncryptionKey)
		}
		if o.SigningKey != "" && !filepath.IsAbs(o.SigningKey) {
			t.Fatalf("accepted signing_key = %q", o.SigningKey)
		}
		for _, p := range o.TrustedKeys {
			if !filepath.IsAbs(p) {
				t.Fatalf("accepted trusted key %q", p)
			}
		}
	})
}
