package imageops_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/r8im/r8im/imageops"
)

// catchAll accepts every connection a client makes and keeps the first
// message it sends: a TLS ClientHello record, or an HTTP request with its
// body. It answers nothing.
type catchAll struct {
	l    net.Listener
	mu   sync.Mutex
	msgs [][]byte
}

func newCatchAll(t *testing.T) *catchAll {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &catchAll{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go c.take(conn)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return c
}

func (c *catchAll) take(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	var msg []byte
	if head, err := br.Peek(5); err == nil && head[0] == 0x16 { // TLS handshake record
		msg = make([]byte, 5+int(binary.BigEndian.Uint16(head[3:5])))
		_, _ = io.ReadFull(br, msg)
	} else if req, err := http.ReadRequest(br); err == nil {
		var buf bytes.Buffer
		_ = req.Write(&buf)
		msg = buf.Bytes()
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, msg)
	c.mu.Unlock()
}

func (c *catchAll) messages() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.msgs...)
}

// TestCogTokenNeverInClearText: with --insecure, against a registry that
// is not on loopback (every connection to registry.example lands on a local
// listener that answers nothing), the cog token exchange tries https and
// never falls back to sending the token over plain http.
func TestCogTokenNeverInClearText(t *testing.T) {
	const token = "r8_never_in_clear_text_0123456789"
	c := newCatchAll(t)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, c.l.Addr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := imageops.Layers(ctx, "registry.example/acme/base:v1", imageops.WithCogToken(token),
		imageops.WithDefaultRegistry("registry.example"), imageops.WithInsecure(true), imageops.WithTransport(tr))
	if err == nil || !strings.Contains(err.Error(), "verifying the cog token") {
		t.Fatalf("Layers = %v; want the token exchange to fail", err)
	}
	msgs := c.messages()
	if len(msgs) == 0 {
		t.Fatal("no connection was made: the test proves nothing")
	}
	for _, m := range msgs {
		if bytes.Contains(m, []byte(token)) {
			t.Fatalf("the token was sent in clear text:\n%s", m)
		}
		if len(m) == 0 || m[0] != 0x16 {
			t.Errorf("a connection did not start with a TLS handshake: %q", m)
		}
	}
}

// TestRejectedCogTokenIsPermanent: a registry refusing the token makes a
// permanent ErrUnauthorized that says where to get a new one.
func TestRejectedCogTokenIsPermanent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cog/v1/verify-token" {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := imageops.Layers(context.Background(), host+"/acme/base:v1", imageops.WithCogToken("r8_wrong"), imageops.WithDefaultRegistry(host))
	if !errors.Is(err, imageops.ErrUnauthorized) || !imageops.IsPermanent(err) {
		t.Fatalf("error %v; want a permanent ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), "rejected the cog token") || !strings.Contains(err.Error(), "replicate.com/auth/token") {
		t.Errorf("error %q does not say the token was rejected and where to get one", err)
	}
}
