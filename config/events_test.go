package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/r8im/r8im/config"
)

func TestValidateServeNeedsStrongSecrets(t *testing.T) {
	for _, tc := range []struct {
		secrets string
		want    string // "" means valid
	}{
		{"", "required"},
		{" , ", "required"},
		{"short", "at least 16"},
		{"0123456789abcdef0123456789abcdef", ""},
		{"0123456789abcdef0123456789abcdef,fedcba9876543210fedcba9876543210", ""}, // rotation: two at once
	} {
		c := config.NewEnqueue()
		c.Load(env{"R8IM_EVENT_SECRETS": tc.secrets}.lookup)
		if err := c.Validate(); err != nil {
			t.Fatalf("%q: plain Validate must not need a secret: %v", tc.secrets, err)
		}
		err := c.ValidateServe()
		var ve *config.ValidationError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: ValidateServe = %v", tc.secrets, err)
		case tc.want != "" && (!errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "R8IM_EVENT_SECRETS")):
			t.Errorf("%q: ValidateServe = %v; want a problem naming R8IM_EVENT_SECRETS, %q", tc.secrets, err, tc.want)
		}
		if tc.secrets != "" && strings.Contains(fmt.Sprint(c)+fmt.Sprint(err), "0123456789abcdef") {
			t.Errorf("a secret shows in the config or its errors")
		}
	}
	c := config.NewEnqueue()
	c.Load(env{"R8IM_EVENT_SECRETS": "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb"}.lookup)
	if got := c.Events.SecretList(); len(got) != 2 || string(got[1]) != "bbbbbbbbbbbbbbbb" {
		t.Errorf("SecretList = %q", got)
	}
}
