// Package storage opens weights sources (s3://, https://, file://) and keeps
// the publish records in Redis.
package storage
