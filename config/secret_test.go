package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/r8im/r8im/config"
)

// Secrets mask themselves, so printing a section struct, or the whole config
// with %#v, is as safe as printing the Config.
func TestSecretTypesMaskEveryRendering(t *testing.T) {
	w := loadWorker(t, env{
		"COG_TOKEN": "tok-1f3a", "AWS_ACCESS_KEY_ID": "AKIA-9c2e", "AWS_SECRET_ACCESS_KEY": "sk-77d0",
		"AWS_SESSION_TOKEN": "st-5b1c", "REDIS_URL": "redis://app:pw-4e8d@redis.internal:6379/0",
	})
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "registry", w.Registry, "s3", w.S3, "redis", w.Redis)
	js, err := json.Marshal(struct {
		R config.Registry
		S config.S3
		D config.Redis
	}{w.Registry, w.S3, w.Redis})
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Join([]string{
		fmt.Sprintf("%#v", w), fmt.Sprintf("%#v", w.Registry), fmt.Sprintf("%+v", w.S3),
		//lint:ignore S1025 the test is of what %s formatting prints
		fmt.Sprint(w.Registry), fmt.Sprint(w.Redis), fmt.Sprintf("%s", w.S3.SecretAccessKey),
		logs.String(), string(js),
	}, "\n")
	for _, secret := range []string{"tok-1f3a", "AKIA-9c2e", "sk-77d0", "st-5b1c", "pw-4e8d"} {
		if strings.Contains(out, secret) {
			t.Errorf("a rendering shows %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "redis.internal:6379") || !strings.Contains(out, "REDACTED") {
		t.Errorf("renderings should mask secrets but keep the Redis host readable:\n%s", out)
	}
	if string(w.Registry.Token) != "tok-1f3a" {
		t.Errorf("string(Token) = %q; the real value must stay usable", string(w.Registry.Token))
	}
}
