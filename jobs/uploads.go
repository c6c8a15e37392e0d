package jobs

import (
	"context"
	"encoding/json"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/storage"
)

// UploadSessions adapts the Redis session store (storage.UploadSessions) to
// what imageops resumes uploads from (imageops.WithUploadSessions).
func UploadSessions(s *storage.UploadSessions) imageops.UploadSessions { return uploadSessions{s} }

type uploadSessions struct{ s *storage.UploadSessions }

func (u uploadSessions) LoadSession(ctx context.Context, key string) (*imageops.UploadSession, error) {
	b, err := u.s.Load(ctx, key)
	if err != nil || b == nil {
		return nil, err
	}
	var s imageops.UploadSession
	if json.Unmarshal(b, &s) != nil {
		return nil, nil // unreadable: the upload starts again
	}
	return &s, nil
}

func (u uploadSessions) SaveSession(ctx context.Context, key string, s imageops.UploadSession) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return u.s.Save(ctx, key, b)
}

func (u uploadSessions) DeleteSession(ctx context.Context, key string) error {
	return u.s.Delete(ctx, key)
}
