package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/storage"
)

// SendEvent POSTs ev to the receiver at baseURL (http://host:port) exactly
// as a training system would: the JSON body signed with secret in the
// R8im-Signature header. It returns the receiver's answer (202 for a new
// event, 200 for a known one).
func SendEvent(ctx context.Context, c *http.Client, baseURL string, secret []byte, ev events.TrainingCompleted) (events.Accepted, error) {
	var acc events.Accepted
	body, err := json.Marshal(ev)
	if err != nil {
		return acc, fmt.Errorf("encoding event %s: %w", ev.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/events/training-completed", bytes.NewReader(body))
	if err != nil {
		return acc, fmt.Errorf("sending event %s: %w", ev.ID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(events.SignatureHeader, events.Sign(secret, time.Now(), body))
	resp, err := c.Do(req)
	if err != nil {
		return acc, fmt.Errorf("sending event %s: %w", ev.ID, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return acc, fmt.Errorf("sending event %s: the receiver answered %s: %s", ev.ID, resp.Status, bytes.TrimSpace(answer))
	}
	if err := json.Unmarshal(answer, &acc); err != nil {
		return acc, fmt.Errorf("reading the receiver's answer to event %s: %w", ev.ID, err)
	}
	return acc, nil
}

// WaitEvent polls GET /v1/events/{id} every interval, each request signed
// with secret (events.SignRequest), until the event's record has succeeded
// or failed, and returns it. seen, when set, is told of every state or
// error change while waiting.
func WaitEvent(ctx context.Context, c *http.Client, baseURL string, secret []byte, id string, interval time.Duration, seen func(*storage.Record)) (*storage.Record, error) {
	var last string
	for {
		rec, err := getRecord(ctx, c, baseURL, "/v1/events/"+url.PathEscape(id), secret)
		if err != nil {
			return nil, fmt.Errorf("waiting for event %s: %w", id, err)
		}
		if rec != nil {
			if now := string(rec.State) + rec.LastError; seen != nil && now != last {
				last = now
				seen(rec)
			}
			if rec.State == storage.StateSucceeded || rec.State == storage.StateFailed {
				return rec, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for event %s: %w", id, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// getRecord returns the record, or nil while the receiver does not know it.
func getRecord(ctx context.Context, c *http.Client, baseURL, path string, secret []byte) (*storage.Record, error) {
	u := baseURL + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(events.SignatureHeader, events.SignRequest(secret, time.Now(), http.MethodGet, req.URL.EscapedPath()))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	switch resp.StatusCode {
	case http.StatusOK:
		var rec storage.Record
		if err := json.Unmarshal(body, &rec); err != nil {
			return nil, fmt.Errorf("reading the record: %w", err)
		}
		return &rec, nil
	case http.StatusNotFound:
		return nil, nil
	default:
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
}
