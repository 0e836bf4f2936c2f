package options

import "testing"

// FuzzParse: any TOML either is refused with an error or gives options
// that pass validation (known policies, positive timeouts).
func FuzzParse(f *testing.F) {
	f.Add([]byte("store = \"/var/lib/store\"\nrestore = \"required\"\nlock_timeout = \"30s\"\n"))
	f.Add([]byte("restore = \"sometimes\"\n"))
	f.Add([]byte("ignore_env = [\"A\", \"B*\"]\nrestore_huge_pages = false\n"))
	f.Add([]byte("[table]\nx = 1\n"))
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
	})
}
