package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/r8im/r8im/storage"
)

// TestPrintRecordListsLayers: `enqueue status` shows each weights layer of
// a layered publish, how it got there, and what was read.
func TestPrintRecordListsLayers(t *testing.T) {
	rec := &storage.Record{ID: "affix:run-1", State: storage.StateSucceeded, LayerDigest: "sha256:aa", DownloadedBytes: 3 << 20, Layers: []storage.LayerRecord{
		{Digest: "sha256:aa", Size: 1024, Files: 2, Source: "uploaded"},
		{Digest: "sha256:bb", Size: 2 << 20, Files: 1, Source: "mounted"},
	}}
	var b bytes.Buffer
	printRecord(&b, rec)
	out := b.String()
	for _, want := range []string{"layer 1", "sha256:aa  1.0 KiB  2 files  uploaded", "layer 2", "sha256:bb  2.0 MiB  1 files  mounted", "read", "3.0 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	var many []storage.LayerRecord
	for range maxPrintedLayers + 5 {
		many = append(many, storage.LayerRecord{Digest: "sha256:cc", Source: "found"})
	}
	b.Reset()
	printRecord(&b, &storage.Record{ID: "x", Layers: many})
	if n := strings.Count(b.String(), "sha256:cc"); n != maxPrintedLayers || !strings.Contains(b.String(), "and 5 more") {
		t.Errorf("%d layers printed of %d, want %d and a count of the rest:\n%s", n, len(many), maxPrintedLayers, b.String())
	}
}
