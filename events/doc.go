// Package events authenticates, decodes and validates the signed
// training-completion events that the receiver (enqueue serve) turns into
// affix tasks.
package events
