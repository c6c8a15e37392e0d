package imageops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileSessions keeps upload sessions as files in Dir (created 0700 if
// missing), one small JSON file per blob, written atomically with mode
// 0600: what `r8im` uses, under the user's cache directory, so that the
// same command run again after an interruption resumes its uploads.
type FileSessions struct{ Dir string }

var _ UploadSessions = FileSessions{}

// LoadSession reads the session saved under key; a missing or unreadable
// file is no session (the upload starts again).
func (f FileSessions) LoadSession(_ context.Context, key string) (*UploadSession, error) {
	var s UploadSession
	ok, err := jsonFiles(f.Dir).load(key, &s)
	if err != nil {
		return nil, fmt.Errorf("reading the upload session: %w", err)
	}
	if !ok || s.Location == "" || s.Offset <= 0 {
		return nil, nil
	}
	return &s, nil
}

// SaveSession writes the session under key.
func (f FileSessions) SaveSession(_ context.Context, key string, s UploadSession) error {
	return jsonFiles(f.Dir).save(key, s)
}

// DeleteSession removes the session saved under key, if any.
func (f FileSessions) DeleteSession(_ context.Context, key string) error {
	return jsonFiles(f.Dir).remove(key)
}

// FileLayerDigests is the layer-digest cache of r8im: one small JSON file
// per layer in Dir (created 0700 if missing, files 0600), under the user's
// cache directory.
type FileLayerDigests struct{ Dir string }

var _ LayerDigests = FileLayerDigests{}

// LookupLayer reads the layer recorded under key; a missing or unreadable
// file is a miss.
func (f FileLayerDigests) LookupLayer(_ context.Context, key string) (CachedLayer, bool, error) {
	var l CachedLayer
	ok, err := jsonFiles(f.Dir).load(key, &l)
	if err != nil || !ok || l.Digest == "" {
		return CachedLayer{}, false, nil
	}
	return l, true, nil
}

// StoreLayer records l under key.
func (f FileLayerDigests) StoreLayer(_ context.Context, key string, l CachedLayer) error {
	return jsonFiles(f.Dir).save(key, l)
}

// jsonFiles keeps small JSON values in a directory, one file per key
// (named by the key's sha256), written atomically with mode 0600.
type jsonFiles string

func (d jsonFiles) path(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(string(d), hex.EncodeToString(sum[:])+".json")
}

// load reads the value under key into v: false when there is none, or it
// does not parse.
func (d jsonFiles) load(key string, v any) (bool, error) {
	b, err := os.ReadFile(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return json.Unmarshal(b, v) == nil, nil
}

func (d jsonFiles) save(key string, v any) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(string(d), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), d.path(key))
}

func (d jsonFiles) remove(key string) error {
	if err := os.Remove(d.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
