// Package imageops implements r8im's image operations (affix, extract, layers,
// remix, zstd) over go-containerregistry; it knows nothing of queues, Redis or
// cloud storage and reports progress through callbacks instead of logging.
package imageops
