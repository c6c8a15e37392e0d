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

func (f FileSessions) path(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(f.Dir, hex.EncodeToString(sum[:])+".json")
}

// LoadSession reads the session saved under key; a missing or unreadable
// file is no session (the upload starts again).
func (f FileSessions) LoadSession(_ context.Context, key string) (*UploadSession, error) {
	b, err := os.ReadFile(f.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the upload session: %w", err)
	}
	var s UploadSession
	if json.Unmarshal(b, &s) != nil || s.Location == "" || s.Offset <= 0 {
		return nil, nil
	}
	return &s, nil
}

// SaveSession writes the session under key.
func (f FileSessions) SaveSession(_ context.Context, key string, s UploadSession) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.Dir, ".session-*")
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
	return os.Rename(tmp.Name(), f.path(key))
}

// DeleteSession removes the session saved under key, if any.
func (f FileSessions) DeleteSession(_ context.Context, key string) error {
	if err := os.Remove(f.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
