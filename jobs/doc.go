// Package jobs runs r8im's work on asynq: the Enqueuer, the task handlers
// and their bookkeeping middleware, callbacks, backfills and metrics. It is
// the only package that knows asynq exists; the payloads themselves are
// plain data in jobs/task.
package jobs
