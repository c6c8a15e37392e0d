// Package task is the vocabulary of r8im's queued work as plain data: task
// type and queue names, the payloads (validated, with their stable task
// ids) and the enqueue request and its answer. It knows no queue, no Redis
// and no storage, so producers (events) can build work without asynq.
package task
