package events

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	oldSecret = []byte("old-secret-0123456789abcdef")
	newSecret = []byte("new-secret-fedcba9876543210")
	testNow   = time.Unix(1_700_000_000, 0)
	testBody  = []byte(`{"id":"run-42"}`)
)

func verifier(secrets ...[]byte) Verifier {
	return Verifier{Secrets: secrets, Now: func() time.Time { return testNow }}
}

func TestVerify(t *testing.T) {
	sig := func(secret []byte, at time.Time) string { return Sign(secret, at, testBody) }
	v1 := func(h string) string { _, v, _ := strings.Cut(h, ",v1="); return v }
	ts := strconv.FormatInt(testNow.Unix(), 10)
	good := sig(newSecret, testNow)
	hex64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		v       Verifier
		header  string
		body    []byte
		want    error // nil: accepted
		tolSkew time.Duration
	}{
		{name: "valid", v: verifier(newSecret), header: good},
		{name: "rotation: signed with the new secret", v: verifier(oldSecret, newSecret), header: good},
		{name: "rotation: signed with the old secret", v: verifier(oldSecret, newSecret), header: sig(oldSecret, testNow)},
		{name: "sender signs with both secrets", v: verifier(newSecret), header: sig(oldSecret, testNow) + ",v1=" + v1(good)},
		{name: "several v1, the matching one last", v: verifier(newSecret), header: "t=" + ts + ",v1=" + hex64 + ",v1=" + hex64 + ",v1=" + v1(good)},
		{name: "spaces after commas", v: verifier(newSecret), header: "t=" + ts + ", v1=" + v1(good)},
		{name: "v1 before t", v: verifier(newSecret), header: "v1=" + v1(good) + ",t=" + ts},
		{name: "uppercase hex", v: verifier(newSecret), header: "t=" + ts + ",v1=" + strings.ToUpper(v1(good))},
		{name: "unknown scheme ignored", v: verifier(newSecret), header: good + ",v2=whatever"},
		{name: "empty secret ignored", v: verifier(nil, newSecret), header: good},
		{name: "within tolerance, past", v: verifier(newSecret), header: sig(newSecret, testNow.Add(-DefaultTolerance+time.Second))},
		{name: "within tolerance, future", v: verifier(newSecret), header: sig(newSecret, testNow.Add(DefaultTolerance-time.Second))},
		{name: "custom tolerance", v: Verifier{Secrets: [][]byte{newSecret}, Tolerance: time.Hour, Now: func() time.Time { return testNow }}, header: sig(newSecret, testNow.Add(-50*time.Minute))},

		{name: "wrong secret", v: verifier(oldSecret), header: good, want: ErrBadSignature},
		{name: "tampered body", v: verifier(newSecret), header: good, body: []byte(`{"id":"run-43"}`), want: ErrBadSignature},
		{name: "tampered timestamp", v: verifier(newSecret), header: "t=" + strconv.FormatInt(testNow.Unix()+1, 10) + ",v1=" + v1(good), want: ErrBadSignature},
		{name: "signature of an empty body", v: verifier(newSecret), header: Sign(newSecret, testNow, nil), want: ErrBadSignature},
		{name: "stale: older than tolerance", v: verifier(newSecret), header: sig(newSecret, testNow.Add(-DefaultTolerance-time.Second)), want: ErrStale},
		{name: "stale: newer than tolerance", v: verifier(newSecret), header: sig(newSecret, testNow.Add(DefaultTolerance+time.Second)), want: ErrStale},
		{name: "stale: epoch", v: verifier(newSecret), header: sig(newSecret, time.Unix(0, 0)), want: ErrStale},
		{name: "stale: far future", v: verifier(newSecret), header: sig(newSecret, time.Unix(999_999_999_999_999_999, 0)), want: ErrStale},
		{name: "custom tolerance exceeded", v: Verifier{Secrets: [][]byte{newSecret}, Tolerance: time.Minute, Now: func() time.Time { return testNow }}, header: sig(newSecret, testNow.Add(-2*time.Minute)), want: ErrStale},
		{name: "no secrets", v: verifier(), header: good, want: ErrNoSecrets},
		{name: "only empty secrets", v: verifier([]byte{}), header: good, want: ErrNoSecrets},

		{name: "missing header", v: verifier(newSecret), header: "", want: ErrNoSignature},
		{name: "blank header", v: verifier(newSecret), header: "  ", want: ErrNoSignature},

		{name: "no t", v: verifier(newSecret), header: "v1=" + v1(good), want: ErrMalformedSignature},
		{name: "no v1", v: verifier(newSecret), header: "t=" + ts, want: ErrMalformedSignature},
		{name: "non-numeric t", v: verifier(newSecret), header: "t=abc,v1=" + v1(good), want: ErrMalformedSignature},
		{name: "negative t", v: verifier(newSecret), header: "t=-1,v1=" + v1(good), want: ErrMalformedSignature},
		{name: "t with plus sign", v: verifier(newSecret), header: "t=+" + ts + ",v1=" + v1(good), want: ErrMalformedSignature},
		{name: "fractional t", v: verifier(newSecret), header: "t=" + ts + ".5,v1=" + v1(good), want: ErrMalformedSignature},
		{name: "huge t", v: verifier(newSecret), header: "t=99999999999999999999,v1=" + v1(good), want: ErrMalformedSignature},
		{name: "empty t", v: verifier(newSecret), header: "t=,v1=" + v1(good), want: ErrMalformedSignature},
		{name: "duplicate t", v: verifier(newSecret), header: "t=" + ts + ",t=" + ts + ",v1=" + v1(good), want: ErrMalformedSignature},
		{name: "bad hex", v: verifier(newSecret), header: "t=" + ts + ",v1=" + strings.Repeat("zz", 32), want: ErrMalformedSignature},
		{name: "odd length hex", v: verifier(newSecret), header: "t=" + ts + ",v1=" + v1(good)[1:], want: ErrMalformedSignature},
		{name: "short hex", v: verifier(newSecret), header: "t=" + ts + ",v1=abcd", want: ErrMalformedSignature},
		{name: "long hex", v: verifier(newSecret), header: "t=" + ts + ",v1=" + v1(good) + "00", want: ErrMalformedSignature},
		{name: "empty v1", v: verifier(newSecret), header: "t=" + ts + ",v1=", want: ErrMalformedSignature},
		{name: "garbage", v: verifier(newSecret), header: "hello world", want: ErrMalformedSignature},
		{name: "garbage part", v: verifier(newSecret), header: good + ",junk", want: ErrMalformedSignature},
		{name: "empty part", v: verifier(newSecret), header: good + ",", want: ErrMalformedSignature},
		{name: "semicolons", v: verifier(newSecret), header: "t=" + ts + ";v1=" + v1(good), want: ErrMalformedSignature},
		{name: "empty key", v: verifier(newSecret), header: "=1," + good, want: ErrMalformedSignature},
		{name: "uppercase key", v: verifier(newSecret), header: "T=" + ts + ",V1=" + v1(good), want: ErrMalformedSignature},
		{name: "too many v1", v: verifier(newSecret), header: "t=" + ts + strings.Repeat(",v1="+hex64, maxSignatures) + ",v1=" + v1(good), want: ErrMalformedSignature},
		{name: "too many parts", v: verifier(newSecret), header: good + strings.Repeat(",x=1", maxParts), want: ErrMalformedSignature},
		{name: "too long", v: verifier(newSecret), header: good + ",x=" + strings.Repeat("a", maxHeaderLen), want: ErrMalformedSignature},
		{name: "bearer token", v: verifier(newSecret), header: "Bearer " + string(newSecret), want: ErrMalformedSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if body == nil {
				body = testBody
			}
			err := tc.v.Verify(tc.header, body)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify(%q) = %v, want nil", tc.header, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify(%q) = %v, want %v", tc.header, err, tc.want)
			}
			for _, s := range [][]byte{oldSecret, newSecret} {
				if strings.Contains(err.Error(), string(s)) {
					t.Errorf("the error %q shows a secret", err)
				}
			}
		})
	}
}

func TestVerifyDefaultClock(t *testing.T) {
	v := Verifier{Secrets: [][]byte{newSecret}}
	if err := v.Verify(Sign(newSecret, time.Now(), testBody), testBody); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(Sign(newSecret, time.Now().Add(-time.Hour), testBody), testBody); !errors.Is(err, ErrStale) {
		t.Fatalf("an hour-old signature: %v, want ErrStale", err)
	}
}

func TestSignFormat(t *testing.T) {
	// printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac secret
	const want = "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
	if got := Sign([]byte("secret"), time.Unix(1700000000, 0), []byte("{}")); got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

// opensslSign signs "<t>.<body>" the way the README does.
func opensslSign(t *testing.T, secret string, ts int64, body []byte) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed to check the README's signing example: apt-get install -y openssl")
	}
	cmd := exec.Command("openssl", "dgst", "-sha256", "-hmac", secret)
	cmd.Stdin = io.MultiReader(strings.NewReader(strconv.FormatInt(ts, 10)+"."), bytes.NewReader(body))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl dgst: %v", err)
	}
	// "SHA2-256(stdin)= <hex>" (OpenSSL 3) or "(stdin)= <hex>" (1.1).
	_, hexsum, ok := strings.Cut(strings.TrimSpace(string(out)), "= ")
	if !ok {
		t.Fatalf("unexpected openssl output %q", out)
	}
	return hexsum
}

func TestOpenSSLSignatureVerifies(t *testing.T) {
	secret := "whsec-0123456789abcdef"
	body := []byte(`{"id":"run-42","base":"r8.im/acme/base:v1"}`)
	ts := testNow.Unix()
	hexsum := opensslSign(t, secret, ts, body)
	header := fmt.Sprintf("t=%d,v1=%s", ts, hexsum)
	if err := verifier([]byte(secret)).Verify(header, body); err != nil {
		t.Fatalf("Verify of openssl's signature %q: %v", header, err)
	}
	if got := Sign([]byte(secret), testNow, body); got != header {
		t.Fatalf("Sign = %q, openssl = %q", got, header)
	}
}

// snippet returns the shell block of the SignatureHeader doc comment that
// follows the line starting with heading.
func snippet(t *testing.T, heading string) string {
	t.Helper()
	src, err := os.ReadFile("signature.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, heading):
			in = true
		case in && strings.HasPrefix(line, "//\t"):
			lines = append(lines, strings.TrimPrefix(line, "//\t"))
		case in && len(lines) > 0:
			return strings.Join(lines, "\n") + "\n"
		}
	}
	t.Fatalf("no shell snippet after %q in signature.go's SignatureHeader comment", heading)
	return ""
}

// TestShellSnippet runs the README's curl + openssl example, as written in
// signature.go, against a receiver that verifies it.
func TestShellSnippet(t *testing.T) {
	for _, tool := range []string{"openssl", "curl", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to check the README's signing example: apt-get install -y %s", tool, tool)
		}
	}
	secret := "whsec-0123456789abcdef"
	body := "{\"id\": \"run-42\",\n \"note\": \"it's 100% \\\"quoted\\\" \\\\ $HOME `x`\"}"
	var got struct {
		header string
		body   []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/events/training-completed" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		got.header = r.Header.Get(SignatureHeader)
		got.body, _ = io.ReadAll(r.Body)
		if err := (Verifier{Secrets: [][]byte{[]byte(secret)}}).Verify(got.header, got.body); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	script := snippet(t, "// Signing from a shell")
	script = strings.Replace(script, "secret='…one of R8IM_EVENT_SECRETS…'", "secret='"+secret+"'", 1)
	script = strings.Replace(script, "http://127.0.0.1:8080", srv.URL, 1)
	script = strings.Replace(script, "curl -sS", "curl -sS --fail-with-body", 1)
	if !strings.Contains(script, secret) || !strings.Contains(script, srv.URL) {
		t.Fatalf("the snippet changed shape; update this test:\n%s", script)
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/event.json", []byte(body+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-eu", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the snippet failed: %v\n%s\nscript:\n%s", err, out, script)
	}
	if string(got.body) != body {
		t.Errorf("curl sent %q, want %q", got.body, body)
	}
	if !strings.HasPrefix(got.header, "t=") {
		t.Errorf("header %q", got.header)
	}
}

func FuzzParseSignature(f *testing.F) {
	f.Add("t=1700000000,v1="+strings.Repeat("ab", 32), []byte(`{"id":"a"}`), []byte("secret"), int64(1700000000))
	f.Fuzz(func(t *testing.T, header string, body, secret []byte, ts int64) {
		// Never panics, whatever the header.
		if _, sigs, err := parseSignature(header); err == nil && (len(sigs) == 0 || len(sigs) > maxSignatures) {
			t.Fatalf("parseSignature(%q) accepted %d signatures", header, len(sigs))
		}
		v := Verifier{Secrets: [][]byte{secret}, Now: func() time.Time { return time.Unix(ts, 0) }}
		_ = v.Verify(header, body)

		// Sign round-trips for every time from 1970 on and every non-empty
		// secret; another body or secret does not verify.
		if ts < 0 {
			ts = -(ts + 1)
		}
		ts %= 1e17
		at := time.Unix(ts, 0)
		v.Now = func() time.Time { return at }
		h := Sign(secret, at, body)
		err := v.Verify(h, body)
		switch {
		case len(secret) == 0 && !errors.Is(err, ErrNoSecrets):
			t.Fatalf("empty secret: Verify = %v, want ErrNoSecrets", err)
		case len(secret) > 0 && err != nil:
			t.Fatalf("Verify(Sign(...)) = %v", err)
		case len(secret) > 0:
			if err := v.Verify(h, append(body[:len(body):len(body)], 'x')); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("a longer body verified: %v", err)
			}
			other := Verifier{Secrets: [][]byte{append(secret[:len(secret):len(secret)], 'x')}, Now: v.Now}
			if err := other.Verify(h, body); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("another secret verified: %v", err)
			}
		}
	})
}
