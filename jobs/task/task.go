package task

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Task types are wire formats: never rename them.
const (
	TypeAffix = "image:affix"
	TypeRemix = "image:remix"
	TypeZstd  = "image:zstd"
)

// Queues, by priority: training events first, operators next, backfills
// with what is left (weights in config.DefaultQueues).
const (
	QueuePublish  = "publish"
	QueueOps      = "ops"
	QueueBackfill = "backfill"
)

// Payload is a task's payload: AffixPayload, RemixPayload or ZstdPayload.
type Payload interface {
	Validate() error
	TaskID() string
	Type() string
}

// Type is the task type of an affix.
func (AffixPayload) Type() string { return TypeAffix }

// Type is the task type of a remix.
func (RemixPayload) Type() string { return TypeRemix }

// Type is the task type of a recompression.
func (ZstdPayload) Type() string { return TypeZstd }

// TaskID is the task id of an affix: "affix:" and the event id, so the
// same event is never enqueued twice.
func (p AffixPayload) TaskID() string { return "affix:" + p.EventID }

// TaskID is the task id of a remix: a hash of its inputs.
func (p RemixPayload) TaskID() string {
	return "remix:" + InputsID(p.Base, p.Weights, p.Dest, p.Platform, p.Created.UTC().Format(time.RFC3339))
}

// TaskID is the task id of a recompression: a hash of the source digest,
// the destination, the level, the minimum size and the platform, so
// re-running a backfill adds nothing.
func (p ZstdPayload) TaskID() string {
	return "zstd:" + InputsID(p.Source, p.Dest, fmt.Sprint(p.Level), fmt.Sprint(p.MinSize), p.Platform)
}

// InputsID is a short stable hash of a task's inputs.
func InputsID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}
