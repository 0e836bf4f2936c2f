// Package crypt encrypts checkpoint files at rest: a checkpoint holds a
// process's memory, secrets included, and a store is often shared (NFS), so
// a handler with an encryption key keeps only ciphertext there.
//
// The format is chunked AES-256-GCM, so that writing streams (a checkpoint
// never has to fit in memory) and a restore decrypts one file with every
// core at once (each chunk sits at a fixed offset and opens on its own).
// A file is a header followed by chunks:
//
//	header  "GSNAPENC", version (1 byte), 3 zero bytes, chunk size
//	        (uint32, big endian, plaintext bytes per chunk), file id (16
//	        random bytes): 32 bytes
//	chunk i AES-256-GCM sealed plaintext bytes [i*size, (i+1)*size), each
//	        chunk size + 16 bytes of tag, the last one shorter (an empty
//	        file still has one chunk: its 16-byte tag)
//
// Every file gets its own AES key, HKDF-SHA256 of the handler's key with
// the file id as salt, so chunk i can take the nonce i (a counter under a
// key used for one file only never repeats). Each chunk's additional data
// is the header, the file's path inside the checkpoint, i and whether i is
// the last chunk: a chunk fails authentication when it is moved to another
// offset or another file, when chunks are dropped from the end (the new
// last chunk was not sealed as last), when the header changes, and when a
// whole file is swapped with another of the same checkpoint.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const (
	// Algorithm names this format in a checkpoint's manifest.
	Algorithm = "aes-256-gcm-chunked"
	// KeySize is the key length: AES-256.
	KeySize = 32
	// ChunkSize is how many plaintext bytes Encrypt seals per chunk: large
	// enough that tags (16 bytes) and per-chunk work are noise, small enough
	// that a few hundred MiB give every core work.
	ChunkSize = 1 << 20

	magic      = "GSNAPENC"
	version    = 1
	headerSize = 32
	idSize     = 16
	// maxChunk bounds the chunk size a reader accepts, so a damaged header
	// can't make it allocate gigabytes.
	maxChunk = 64 << 20
	// hkdfInfo separates this use of the key from any other.
	hkdfInfo = "gpusnap checkpoint file " + Algorithm + " v1"
)

var (
	// ErrAuth means a chunk did not authenticate: the key is not the one the
	// file was encrypted with, or the file was changed, truncated, or moved.
	ErrAuth = errors.New("failed authentication (another key, or the file was changed, truncated or moved)")
	// ErrFormat means the file is not in this package's format at all.
	ErrFormat = errors.New("not an encrypted checkpoint file")
)

// Key is a handler's encryption key. Its ID names it in manifests and
// messages without revealing it.
type Key struct {
	raw [KeySize]byte
	// ID is the first 8 bytes, in hex, of the SHA-256 of the key.
	ID string
}

// NewKey wraps exactly KeySize bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("an AES-256 key is %d bytes, got %d", KeySize, len(raw))
	}
	k := &Key{}
	copy(k.raw[:], raw)
	sum := sha256.Sum256(raw)
	k.ID = hex.EncodeToString(sum[:8])
	return k, nil
}

// ParseKey reads a key file's content: exactly 32 raw bytes, or 64 hex
// digits with an optional trailing newline (what `gpusnap enckey` writes,
// easy to put in a Kubernetes Secret).
func ParseKey(data []byte) (*Key, error) {
	if len(data) == KeySize {
		return NewKey(data)
	}
	text := strings.TrimRight(string(data), "\r\n")
	if len(text) == 2*KeySize {
		if raw, err := hex.DecodeString(text); err == nil {
			return NewKey(raw)
		}
	}
	return nil, fmt.Errorf("holds %d bytes; want exactly %d random bytes or %d hex digits (gpusnap enckey writes one)",
		len(data), KeySize, 2*KeySize)
}

// header is a file's first headerSize bytes.
type header [headerSize]byte

func newHeader(chunk uint32, id []byte) header {
	var h header
	copy(h[:], magic)
	h[len(magic)] = version
	binary.BigEndian.PutUint32(h[12:16], chunk)
	copy(h[16:], id)
	return h
}

// parse checks magic, version and chunk size and returns the chunk size.
func (h *header) parse() (int, error) {
	switch {
	case string(h[:len(magic)]) != magic:
		return 0, fmt.Errorf("%w: no %q header", ErrFormat, magic)
	case h[len(magic)] != version || h[9]|h[10]|h[11] != 0:
		return 0, fmt.Errorf("%w: format version %d, this build reads version %d", ErrFormat, h[len(magic)], version)
	}
	chunk := binary.BigEndian.Uint32(h[12:16])
	if chunk == 0 || chunk > maxChunk {
		return 0, fmt.Errorf("%w: chunk size %d out of range", ErrFormat, chunk)
	}
	return int(chunk), nil
}

// fileCipher seals and opens the chunks of one file.
type fileCipher struct {
	aead cipher.AEAD
	h    header
	name string
}

// cipherFor derives the file's own key from the handler's key and the file
// id in its header.
func (k *Key) cipherFor(h header, name string) (*fileCipher, error) {
	sub, err := hkdf.Key(sha256.New, k.raw[:], h[16:], hkdfInfo, KeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &fileCipher{aead: aead, h: h, name: name}, nil
}

// nonce is the chunk index: unique, since the key is the file's alone.
func nonce(i int64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n
}

// ad binds a chunk to its file (header and path), its place and whether it
// ends the file.
func (c *fileCipher) ad(i int64, final bool) []byte {
	ad := make([]byte, 0, headerSize+8+len(c.name)+9)
	ad = append(ad, c.h[:]...)
	ad = binary.BigEndian.AppendUint64(ad, uint64(len(c.name)))
	ad = append(ad, c.name...)
	ad = binary.BigEndian.AppendUint64(ad, uint64(i))
	if final {
		return append(ad, 1)
	}
	return append(ad, 0)
}

func (c *fileCipher) seal(dst, plain []byte, i int64, final bool) []byte {
	return c.aead.Seal(dst, nonce(i), plain, c.ad(i, final))
}

func (c *fileCipher) open(dst, sealed []byte, i int64, final bool) ([]byte, error) {
	return c.aead.Open(dst, nonce(i), sealed, c.ad(i, final))
}

// GenerateKeyFile makes a new key and returns what its key file holds (64
// hex digits and a newline, as ParseKey reads) and its ID.
func GenerateKeyFile() (file []byte, id string, err error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", err
	}
	k, err := NewKey(raw)
	if err != nil {
		return nil, "", err
	}
	return []byte(hex.EncodeToString(raw) + "\n"), k.ID, nil
}
