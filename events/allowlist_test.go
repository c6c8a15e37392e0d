package events

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseAllowlist(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: " , ,", want: nil},
		{in: "s3://weights/*, https://Files.Example.com/*", want: []string{"s3://weights/*", "https://files.example.com/*"}},
		{in: "s3://bucket/prefix/*,s3://bucket/a/*.tar", want: []string{"s3://bucket/prefix/*", "s3://bucket/a/*.tar"}},
		{in: "HTTP://127.0.0.1:8081/*", want: []string{"http://127.0.0.1:8081/*"}},
		{in: "r8.im/*,R8.im/acme/*,localhost:5000/team/model", want: []string{"r8.im/*", "r8.im/acme/*", "localhost:5000/team/model"}},
		{in: "hooks.example.com, *.Example.org ,127.0.0.1,[::1]", want: []string{"hooks.example.com", "*.example.org", "127.0.0.1", "::1"}},

		{in: "file:///data/*", wantErr: "file:// is never accepted"},
		{in: "ftp://host/*", wantErr: "scheme"},
		{in: "s3://weights", wantErr: "end with /*"},
		{in: "s3://weights/", wantErr: "end with /*"},
		{in: "s3://wei:ghts/*", wantErr: "S3 bucket"},
		{in: "https://*.example.com/*", wantErr: "without '*'"},
		{in: "https://user@files.example.com/*", wantErr: "user name"},
		{in: "https://files.example.com/a/../b/*", wantErr: "'..'"},
		{in: "https://files.example.com//*", wantErr: "empty"},
		{in: "https://files.example.com/a%2F/*", wantErr: "'%'"},
		{in: "https://files.example.com/*?x=1", wantErr: "'?'"},
		{in: "https://files.example.com/a*/*", wantErr: "no other wildcard"},
		{in: "https://files.example.com/[a", wantErr: "bad wildcard"},
		{in: "r8.im", wantErr: ""}, // a host: valid as a callback host
		{in: "r8.im/", wantErr: "end with /*"},
		{in: "r8.im/acme/../*", wantErr: "'..'"},
		{in: "r8.im/Acme/*", wantErr: "lowercase"},
		{in: "*.r8.im/*", wantErr: "registry"},
		{in: "hooks.example.com:8443", wantErr: "without a port"},
		{in: "*.com", wantErr: "too broad"},
		{in: "*", wantErr: "not a host name"},
		{in: "ev*il.com", wantErr: "not a host name"},
		{in: "hooks.example.com.", wantErr: "not a host name"},
		{in: "ok.example.com,bad host", wantErr: `"bad host"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAllowlist(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAllowlist(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAllowlist(%q): %v", tc.in, err)
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseAllowlist(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestAllowlistsCheck(t *testing.T) {
	a := Allowlists{
		Sources:       []string{"s3://weights/*", "r8.im/*"},
		Destinations:  []string{"r8.im/*", "s3://weights/*"},
		CallbackHosts: []string{"hooks.example.com", "r8.im/*"},
	}
	err := a.Check()
	if err == nil {
		t.Fatal("Check accepted patterns in the wrong lists")
	}
	for _, want := range []string{EnvAllowedSources + `: "r8.im/*"`, EnvAllowedDestinations + `: "s3://weights/*"`, EnvAllowedCallbackHosts + `: "r8.im/*"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check() = %v, want it to mention %s", err, want)
		}
	}
	if err := (Allowlists{Sources: []string{"s3://weights/*"}, Destinations: []string{"r8.im/*"}, CallbackHosts: []string{"*.example.com"}}).Check(); err != nil {
		t.Fatal(err)
	}
}

func TestNewAllowlists(t *testing.T) {
	a, err := NewAllowlists(AllowlistSettings{
		Sources: "s3://weights/*, https://files.example.com/*", Destinations: "r8.im/acme/*",
		Bases: "r8.im/acme/base, r8.im/library/*", Targets: "/src/weights, /models/",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Allowlists{
		Sources: []string{"s3://weights/*", "https://files.example.com/*"}, Destinations: []string{"r8.im/acme/*"},
		Bases: []string{"r8.im/acme/base", "r8.im/library/*"}, Targets: []string{"/src/weights", "/models"},
	}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("NewAllowlists = %+v, want %+v", a, want)
	}
	_, err = NewAllowlists(AllowlistSettings{Sources: "r8.im/*", Destinations: "s3://x/*", CallbackHosts: "hooks.example.com:1", Bases: "s3://x/*", Targets: "src/weights,/"})
	for _, env := range []string{EnvAllowedSources, EnvAllowedDestinations, EnvAllowedCallbackHosts, EnvAllowedBases, EnvAllowedTargets} {
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("NewAllowlists error %v does not name %s", err, env)
		}
	}
}

// weightsAllowed reports whether checkWeights accepts raw under sources.
func weightsAllowed(sources []string, raw string) (bool, string) {
	var ps problems
	checkWeights(&ps, raw, &Allowlists{Sources: sources})
	if len(ps) == 0 {
		return true, ""
	}
	return false, ps[0].Message
}

func TestSourceAllowlist(t *testing.T) {
	list := []string{"s3://weights/*", "s3://bucket/prefix/*", "s3://bucket/exact/*.tar", "https://files.example.com/*", "https://cdn.example.com/models/*", "http://127.0.0.1:8081/*"}
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"s3://weights/acme/run-42/weights.tar", true},
		{"s3://weights/x", true},
		{"s3://bucket/prefix/a/b/c.tar", true},
		{"s3://bucket/exact/w.tar", true},
		{"https://files.example.com/run/weights.tar", true},
		{"https://files.example.com/run/weights.tar?X-Amz-Signature=abc&X-Amz-Credential=AKIA", true},
		{"HTTPS://FILES.EXAMPLE.COM/run/weights.tar", true}, // DNS names are case-insensitive
		{"https://cdn.example.com/models/w.tar", true},
		{"http://127.0.0.1:8081/w.tar", true},
		{"s3://weights/a%20b.tar", true},

		// host boundary
		{"https://files.example.com.evil.org/x", false},
		{"https://evil.org/files.example.com/x", false},
		{"https://files.example.com@evil.org/x", false},
		{"https://files.example.com:x@evil.org/x", false},
		{"https://user:pass@files.example.com/x", false},
		{"https://evil.org?https://files.example.com/x", false},
		{"https://evil.org#https://files.example.com/x", false},
		{"https://evil.org\\@files.example.com/x", false},
		{"https://evilfiles.example.com/x", false},
		{"https://files.example.com./x", false},
		{"https://files.example.com:8443/x", false},
		{"https://files.example.com%2eevil.org/x", false},
		{"https://filés.example.com/x", false},
		{"//files.example.com/x", false},
		{"files.example.com/x", false},
		// buckets are case-sensitive
		{"s3://WEIGHTS/x", false},
		{"s3://weights.evil/x", false},
		{"s3://weights:9000/x", false},
		// path prefix and traversal
		{"s3://bucket/prefix", false},
		{"s3://bucket/prefix/", false},
		{"s3://bucket/prefixevil/x", false},
		{"s3://bucket/other/x", false},
		{"s3://bucket/prefix/../other/x", false},
		{"s3://weights/../other/x", false},
		{"s3://bucket/prefix/%2e%2e/other/x", false},
		{"s3://bucket/prefix%2F..%2Fother/x", false},
		{"s3://bucket/prefix/./x", false},
		{"s3://bucket/prefix//x", false},
		{"s3://bucket/prefix/%252e%252e/x", false},
		{"s3://bucket/prefix/a\\..\\x", false},
		{"s3://bucket/prefix/x%00.tar", false},
		{"s3://bucket/exact/a/w.tar", false}, // * does not cross '/'
		{"s3://bucket/exact/w.tgz", false},
		{"https://cdn.example.com/models", false},
		{"https://cdn.example.com/modelsevil/x", false},
		{"https://cdn.example.com/models/../secret", false},
		{"https://cdn.example.com/models/%2E%2E/secret", false},
		// schemes
		{"http://files.example.com/x", false},
		{"https://127.0.0.1:8081/w.tar", false},
		{"file:///etc/passwd", false},
		{"file://files.example.com/x", false},
		{"ftp://files.example.com/x", false},
		{"s3:weights/x", false},
		{"s3://weights/x?versionId=1", false},
		{"s3://weights/x#frag", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, msg := weightsAllowed(list, tc.url)
			if got != tc.want {
				t.Fatalf("weights %q allowed = %v (%s), want %v", tc.url, got, msg, tc.want)
			}
			if u, err := url.Parse(tc.url); err == nil && u.RawQuery != "" && strings.Contains(msg, u.RawQuery) {
				t.Errorf("the message %q shows the query", msg)
			}
		})
	}
}

func TestSourceAllowlistPlainHTTP(t *testing.T) {
	ok, msg := weightsAllowed([]string{"https://files.example.com/*"}, "http://files.example.com/w.tar")
	if ok || !strings.Contains(msg, "plain http:// is refused") {
		t.Fatalf("plain http: %v %q", ok, msg)
	}
	if ok, msg := weightsAllowed([]string{"http://files.example.com/*"}, "http://files.example.com/w.tar"); !ok {
		t.Fatalf("an http:// entry should allow plain http: %s", msg)
	}
}

func TestDestinationAllowlist(t *testing.T) {
	list := []string{"r8.im/acme/*", "localhost:5000/team/model", "registry.example.com/*"}
	for _, tc := range []struct {
		repo string
		want bool
	}{
		{"r8.im/acme/model", true},
		{"r8.im/acme/team/model", true},
		{"R8.IM/acme/model", true},
		{"localhost:5000/team/model", true},
		{"registry.example.com/anything/at/all", true},

		{"r8.im/acme", false},
		{"r8.im/acmeevil/model", false},
		{"r8.im/other/model", false},
		{"r8.im/acme/../other/model", false},
		{"r8.im/acme/./model", false},
		{"r8.im/acme//model", false},
		{"r8.im/acme/-model", false},
		{"r8.im.evil.org/acme/model", false},
		{"evil.org/r8.im/acme/model", false},
		{"r8.im:443/acme/model", false},
		{"user@r8.im/acme/model", false},
		{"localhost:5000/team/model2", false},
		{"localhost:5001/team/model", false},
		{"localhost/team/model", false},
		{"registry.example.com.evil.org/x/y", false},
		{"r8.im/acme/model:v1", false},
		{"r8.im/acme/model@sha256:" + strings.Repeat("a", 64), false},
		{"acme/model", false},
		{"r8.im/Acme/model", false},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			var ps problems
			checkDestination(&ps, Destination{Repo: tc.repo}, &Allowlists{Destinations: list})
			if got := len(ps) == 0; got != tc.want {
				t.Fatalf("destination %q allowed = %v (%v), want %v", tc.repo, got, ps, tc.want)
			}
		})
	}
}

func TestCallbackHostAllowlist(t *testing.T) {
	list := []string{"hooks.example.com", "*.example.org", "127.0.0.1", "::1"}
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://hooks.example.com/r8im", true},
		{"https://hooks.example.com:8443/r8im?token=x", true},
		{"https://HOOKS.Example.COM/r8im", true},
		{"https://a.example.org/x", true},
		{"https://a.b.example.org/x", true},
		{"http://127.0.0.1:9999/cb", true},
		{"http://[::1]:9999/cb", true},
		{"https://127.0.0.1/cb", true},

		{"https://hooks.example.com.evil.org/x", false},
		{"https://evilhooks.example.com/x", false},
		{"https://hooks.example.com@evil.org/x", false},
		{"https://user:pw@hooks.example.com/x", false},
		{"https://hooks.example.com./x", false},
		{"https://example.org/x", false},
		{"https://evilexample.org/x", false},
		{"https://example.org.evil.com/x", false},
		{"http://hooks.example.com/x", false}, // plain http to a non-loopback host
		{"http://localhost:9999/cb", false},   // loopback, but not in the list
		{"http://127.0.0.2:9999/cb", false},
		{"ftp://hooks.example.com/x", false},
		{"https:///x", false},
		{"hooks.example.com/x", false},
		{"https://hooks.example.com/x#frag", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			var ps problems
			checkCallback(&ps, tc.url, &Allowlists{CallbackHosts: list})
			if got := len(ps) == 0; got != tc.want {
				t.Fatalf("callback %q allowed = %v (%v), want %v", tc.url, got, ps, tc.want)
			}
			for _, p := range ps {
				if strings.Contains(p.Message, "token=") || strings.Contains(p.Message, "pw@") {
					t.Errorf("the message %q shows a query or password", p.Message)
				}
			}
		})
	}
}

// An entry that is not a valid pattern of its kind matches nothing, even
// when Allowlists is built without ParseAllowlist.
func TestInvalidPatternsMatchNothing(t *testing.T) {
	if ok, _ := weightsAllowed([]string{"https://*/*", "r8.im/*", "files.example.com", "https://files.example.com"}, "https://files.example.com/x"); ok {
		t.Fatal("an invalid source pattern matched")
	}
	var ps problems
	checkDestination(&ps, Destination{Repo: "r8.im/acme/model"}, &Allowlists{Destinations: []string{"r8.im", "*/*", "https://r8.im/*"}})
	if len(ps) == 0 {
		t.Fatal("an invalid destination pattern matched")
	}
	ps = nil
	checkCallback(&ps, "https://hooks.example.com/x", &Allowlists{CallbackHosts: []string{"*", "*.com", "https://hooks.example.com/*"}})
	if len(ps) == 0 {
		t.Fatal("an invalid host pattern matched")
	}
}
