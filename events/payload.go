package events

import "github.com/r8im/r8im/jobs/task"

// Payload is the affix task for the event: the event id becomes the task
// id, so a resent event is not enqueued twice, and completed_at the image's
// created time (in UTC), so a retry builds the same digests. callback_url
// and metadata are not part of the task; the receiver stores them with the
// record. When Validate has passed, so does the payload's Validate.
func (e *TrainingCompleted) Payload() task.AffixPayload {
	dest := e.Destination.Repo
	if e.Destination.Tag != "" {
		dest += ":" + e.Destination.Tag
	}
	return task.AffixPayload{
		EventID:     e.ID,
		Base:        e.Base,
		Weights:     e.Weights,
		Dest:        dest,
		Target:      e.Target,
		Compression: e.Compression,
		Layers:      e.Layers,
		Created:     e.CompletedAt.UTC(),
	}
}
