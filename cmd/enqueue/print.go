package main

import (
	"encoding/json"
	"fmt"

	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/storage"
)

// maxPrintedError is the most of a record's last error that enqueue prints.
const maxPrintedError = 4 << 10

// printable is what enqueue prints of a record. Metadata and inputs nested
// deeper than events.MaxMetadataDepth, or larger than
// events.MaxMetadataSize, are replaced by a note: indented output grows with
// the square of the nesting (18 KB of nested arrays printed as 162 MB), and
// a record may hold what a producer other than the receiver wrote. The last
// error loses control characters and terminal escapes and is cut to 4 KiB.
func printable(rec *storage.Record) *storage.Record {
	out := *rec
	out.Metadata = boundJSON(out.Metadata, "metadata")
	out.Inputs = boundJSON(out.Inputs, "inputs")
	out.LastError = untrusted.Text(out.LastError, maxPrintedError)
	return &out
}

func printableAll(recs []storage.Record) []*storage.Record {
	out := make([]*storage.Record, len(recs))
	for i := range recs {
		out[i] = printable(&recs[i])
	}
	return out
}

// boundJSON returns raw, or an object {"omitted": "<why>"} in its place
// when it is too large, too deeply nested or not JSON.
func boundJSON(raw json.RawMessage, what string) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	var why string
	switch depth := events.JSONDepth(raw); {
	case len(raw) > events.MaxMetadataSize:
		why = fmt.Sprintf("%s of %d bytes, more than the %d enqueue prints", what, len(raw), events.MaxMetadataSize)
	case depth > events.MaxMetadataDepth:
		why = fmt.Sprintf("%s nested %d levels deep, more than the %d enqueue prints", what, depth, events.MaxMetadataDepth)
	case !json.Valid(raw):
		why = what + " that is not valid JSON"
	default:
		return raw
	}
	b, _ := json.Marshal(map[string]string{"omitted": why})
	return b
}
