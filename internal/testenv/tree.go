package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TreeOf describes every path under dir: type, mode, mtime and content
// hash, or a symlink's target: two trees compare equal when the same
// files landed with the same modes, times and bytes.
func TreeOf(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fmt.Sprintf("%v %d", fi.Mode(), fi.ModTime().Unix())
		switch {
		case fi.Mode()&os.ModeSymlink != 0: // extract sets no symlink times
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc = fmt.Sprintf("%v -> %s", fi.Mode(), l)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		}
		out[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
