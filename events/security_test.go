package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/storage"
)

func TestBaseAllowlist(t *testing.T) {
	for _, tc := range []struct {
		bases []string
		base  string
		want  string // "" accepted, else a substring of the base problem
	}{
		{[]string{"r8.im/acme/*"}, "r8.im/acme/model-base@" + digest, ""},
		{[]string{"r8.im/acme/*"}, "r8.im/acme/team/base:v1", ""},
		{[]string{"r8.im/acme/model-base"}, "r8.im/acme/model-base:v3", ""},
		{[]string{"localhost:5000/*"}, "localhost:5000/base:v1", ""},
		{nil, "r8.im/acme/model-base:v3", "no base image is allowed: the receiver's operator must set R8IM_ALLOWED_BASES"},
		{[]string{"r8.im/acme/*"}, "r8.im/private/secret-base:v1", `"r8.im/private/secret-base" is not allowed by R8IM_ALLOWED_BASES`},
		{[]string{"r8.im/acme/*"}, "evil.example.net/acme/base:v1", "is not allowed by R8IM_ALLOWED_BASES"},
		{[]string{"r8.im/acme/*"}, "r8.im:443/acme/base:v1", "is not allowed by R8IM_ALLOWED_BASES"},
		{[]string{"r8.im/acme/*"}, "127.0.0.1:6379/acme/base:v1", "is not allowed by R8IM_ALLOWED_BASES"},
		{[]string{"r8.im/acme/model-base"}, "r8.im/acme/model-base-2:v1", "is not allowed"},
		{[]string{"r8.im/acme/*"}, "r8.im/acme:v1", "is not allowed"},        // the prefix itself is not below it
		{[]string{"s3://weights/*"}, "r8.im/acme/base:v1", "is not allowed"}, // a source pattern matches no base
	} {
		t.Run(tc.base, func(t *testing.T) {
			a := testAllow()
			a.Bases = tc.bases
			e := validEvent(t)
			e.Base = tc.base
			ps := problemsOf(e.Validate(a))
			if tc.want == "" {
				if len(ps) > 0 {
					t.Fatalf("refused: %+v", ps)
				}
				return
			}
			if !hasProblem(ps, "base", tc.want) {
				t.Fatalf("problems %+v; want base: %q", ps, tc.want)
			}
		})
	}
}

func TestTargetAllowlist(t *testing.T) {
	for _, tc := range []struct {
		targets []string
		target  string
		want    string
	}{
		{nil, "", ""},
		{nil, "/src/weights", ""},
		{[]string{"/src/weights", "/models"}, "/models", ""},
		{nil, "/etc", `"/etc" is not allowed by R8IM_ALLOWED_TARGETS: use one of /src/weights`},
		{nil, "/src", `"/src" is not allowed by R8IM_ALLOWED_TARGETS`},
		{nil, "/src/weights/sub", "is not allowed by R8IM_ALLOWED_TARGETS"}, // exact, not a prefix
		{[]string{"/models"}, "", "none given, and the default /src/weights is not allowed by R8IM_ALLOWED_TARGETS: name one of /models"},
		{nil, "/src/../etc", "must be a clean absolute directory"},
		{nil, "/", "must be a clean absolute directory"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			a := testAllow()
			a.Targets = tc.targets
			e := validEvent(t)
			e.Target = tc.target
			ps := problemsOf(e.Validate(a))
			if tc.want == "" {
				if len(ps) > 0 {
					t.Fatalf("refused: %+v", ps)
				}
				return
			}
			if !hasProblem(ps, "target", tc.want) {
				t.Fatalf("problems %+v; want target: %q", ps, tc.want)
			}
		})
	}
}

func TestParseTargets(t *testing.T) {
	got, err := ParseTargets(" /src/weights/ , ,/models//v1")
	if err != nil || strings.Join(got, ",") != "/src/weights,/models/v1" {
		t.Fatalf("ParseTargets = %q, %v", got, err)
	}
	for _, bad := range []string{"src/weights", "/", "/..", "/src/*", "/a b"} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("ParseTargets(%q) accepted it", bad)
		}
	}
}

func TestMetadataDepth(t *testing.T) {
	nest := func(n int) string { // metadata nesting n levels, itself included
		return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
	}
	for _, tc := range []struct {
		metadata string
		want     string
	}{
		{nest(MaxMetadataDepth), ""},
		{`{"s": "[[[[[[[[[[[[[[[[[[[[[[", "q": "\"[[[[[[[[[[[[[[[["}`, ""}, // brackets in strings do not count
		{nest(MaxMetadataDepth + 1), "nests objects and arrays 9 levels deep, more than 8: flatten it"},
		{nest(9000), "nests objects and arrays 9000 levels deep"},
	} {
		e := validEvent(t)
		e.Metadata = json.RawMessage(tc.metadata)
		ps := problemsOf(e.Validate(testAllow()))
		if tc.want == "" && len(ps) > 0 || tc.want != "" && !hasProblem(ps, "metadata", tc.want) {
			t.Errorf("metadata of %d bytes: problems %+v; want %q", len(tc.metadata), ps, tc.want)
		}
	}
}

func TestJSONDepth(t *testing.T) {
	for in, want := range map[string]int{
		`1`: 0, `"[{"`: 0, `{}`: 1, `[1,[2]]`: 2, `{"a":{"b":[{}]}}`: 4, `{"a\"[":"\\"}`: 1, `[[],[],[[]]]`: 3,
	} {
		if got := JSONDepth([]byte(in)); got != want {
			t.Errorf("JSONDepth(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestPublicRecord(t *testing.T) {
	rec := &storage.Record{
		ID: "affix:run-1", CallbackURL: "https://hooks.example.com/cb?token=cbsecret#frag",
		Inputs:    json.RawMessage(`{"base":"r8.im/acme/base:v1","weights":"https://u:pw@files.example.com/w.tar?X-Amz-Signature=presigned","level":3}`),
		Metadata:  json.RawMessage(`{"run":1}`),
		LastError: "GET https://files.example.com/w.tar?X-Amz-Signature=presigned: 500: \x1b]0;pwned\x07\x1b[31mboom\r\nfake line" + strings.Repeat("x", 4000),
	}
	out := PublicRecord(rec)
	b, _ := json.Marshal(out)
	for _, bad := range []string{"cbsecret", "frag", "presigned", "pw@", "\\u001b", "pwned", "\\r", "\\n", strings.Repeat("x", 1000)} {
		if strings.Contains(string(b), bad) {
			t.Errorf("the public record holds %q:\n%s", bad, b)
		}
	}
	for _, want := range []string{`"callback_url":"https://hooks.example.com/cb"`, `https://files.example.com/w.tar`, `"base":"r8.im/acme/base:v1"`, `"level":3`, `"metadata":{"run":1}`, "boom", "fake line"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the public record lacks %q:\n%s", want, b)
		}
	}
	if rec.CallbackURL != "https://hooks.example.com/cb?token=cbsecret#frag" {
		t.Error("PublicRecord changed the record it was given")
	}
}

func TestVerifyRequest(t *testing.T) {
	v := verifier(newSecret)
	good := SignRequest(newSecret, testNow, "GET", "/v1/events/run-42")
	if err := v.VerifyRequest(good, "GET", "/v1/events/run-42"); err != nil {
		t.Fatalf("VerifyRequest: %v", err)
	}
	for _, tc := range []struct {
		name, header, method, path string
		want                       error
	}{
		{"another record", good, "GET", "/v1/events/run-43", ErrBadSignature},
		{"another method", good, "DELETE", "/v1/events/run-42", ErrBadSignature},
		{"a POST body's signature", Sign(newSecret, testNow, testBody), "GET", "/v1/events/run-42", ErrBadSignature},
		{"signed with an empty text", Sign(newSecret, testNow, nil), "GET", "/v1/events/run-42", ErrBadSignature},
		{"stale", SignRequest(newSecret, testNow.Add(-time.Hour), "GET", "/v1/events/run-42"), "GET", "/v1/events/run-42", ErrStale},
		{"unsigned", "", "GET", "/v1/events/run-42", ErrNoSignature},
	} {
		if err := v.VerifyRequest(tc.header, tc.method, tc.path); !errors.Is(err, tc.want) {
			t.Errorf("%s: VerifyRequest = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A GET signature does not sign an event whose body is its text.
	if err := v.Verify(good, RequestText("GET", "/v1/events/run-42")); err != nil {
		t.Fatalf("the signed text is %q: %v", RequestText("GET", "/v1/events/run-42"), err)
	}
	if _, err := Decode(strings.NewReader(string(RequestText("GET", "/v1/events/run-42")))); err == nil {
		t.Fatal("a GET's signed text decodes as an event")
	}
}

// TestParseBeforeBody: Parse refuses a stale or malformed header by itself,
// whatever the body would have been, and says so without naming a secret.
func TestParseBeforeBody(t *testing.T) {
	v := verifier(newSecret)
	if _, err := v.Parse(Sign([]byte("not-a-secret-of-this-receiver"), testNow.Add(-time.Hour), nil)); !errors.Is(err, ErrStale) {
		t.Fatalf("Parse of an hour-old header = %v, want ErrStale", err)
	}
	if _, err := v.Parse("t=1,v1=00"); !errors.Is(err, ErrMalformedSignature) {
		t.Fatalf("Parse of a malformed header = %v", err)
	}
	s, err := v.Parse(Sign([]byte("not-a-secret-of-this-receiver"), testNow, testBody))
	if err != nil {
		t.Fatalf("Parse of a well-formed, current header = %v (the MAC is checked by Check)", err)
	}
	if err := v.Check(s, testBody); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Check = %v, want ErrBadSignature", err)
	}
}

// TestShellReadSnippet runs the README's GET example, as written in
// signature.go, against a receiver that verifies it.
func TestShellReadSnippet(t *testing.T) {
	for _, tool := range []string{"openssl", "curl", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to check the README's signing example: apt-get install -y %s", tool, tool)
		}
	}
	secret := "whsec-0123456789abcdef"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := (Verifier{Secrets: [][]byte{[]byte(secret)}}).VerifyRequest(r.Header.Get(SignatureHeader), r.Method, r.URL.EscapedPath()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"id":"affix:run-42"}`))
	}))
	defer srv.Close()
	script := snippet(t, "// Reading an event's record from a shell")
	script = strings.Replace(script, "secret='…one of R8IM_EVENT_SECRETS…'", "secret='"+secret+"'", 1)
	script = strings.Replace(script, "http://127.0.0.1:8080", srv.URL, 1)
	script = strings.Replace(script, "curl -sS", "curl -sS --fail-with-body", 1)
	if !strings.Contains(script, secret) || !strings.Contains(script, srv.URL) {
		t.Fatalf("the snippet changed shape; update this test:\n%s", script)
	}
	cmd := exec.Command("sh", "-eu", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "affix:run-42") {
		t.Fatalf("the snippet failed: %v\n%s\nscript:\n%s", err, out, script)
	}
}

func problemsOf(err error) []Problem {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Problems
	}
	if err != nil {
		return []Problem{{Message: err.Error()}}
	}
	return nil
}

// FuzzJSONDepth: for valid JSON, JSONDepth is the nesting depth that
// encoding/json's tokenizer sees.
func FuzzJSONDepth(f *testing.F) {
	for _, s := range []string{`{}`, `[[1,{"a":"[\"]"}]]`, `"\\"`, `{"a":{"b":[{}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := JSONDepth(data)
		if !json.Valid(data) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		depth, want := 0, 0
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			switch tok {
			case json.Delim('{'), json.Delim('['):
				depth++
				want = max(want, depth)
			case json.Delim('}'), json.Delim(']'):
				depth--
			}
		}
		if got != want {
			t.Fatalf("JSONDepth(%s) = %d, the tokenizer sees %d", data, got, want)
		}
	})
}
