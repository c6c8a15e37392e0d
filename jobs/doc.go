// Package jobs defines r8im's asynq task types, their payloads and handlers;
// it is the only package that knows asynq exists.
package jobs
