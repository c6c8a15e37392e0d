package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a certificate authority made at test time. Every TLS server testenv
// starts (registry, token issuer, proxy) has a certificate from the one CA of
// the test process, TestCA, so a single trust setting covers them all; no
// client trusts it unless told to.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte         // the CA certificate, PEM-encoded
	Pool *x509.CertPool // holds only the CA

	key *ecdsa.PrivateKey

	mu     sync.Mutex
	server *tls.Certificate // for 127.0.0.1, ::1 and localhost, made once
}

var (
	testCAOnce sync.Once
	testCA     *CA
	testCAErr  error
)

// TestCA returns the test process's CA, made on first use (ECDSA P-256,
// valid from an hour ago for a day).
func TestCA(t testing.TB) *CA {
	t.Helper()
	testCAOnce.Do(func() { testCA, testCAErr = NewCA() })
	if testCAErr != nil {
		t.Fatalf("making the test CA: %v", testCAErr)
	}
	return testCA
}

// NewCA makes a fresh CA. Most tests want TestCA; a second CA is for
// proving that a client refuses a server it was not told to trust.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "r8im testenv CA", Organization: []string{"r8im tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signing the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool, key: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// issue signs a leaf certificate for key with the given template fields.
func (ca *CA) issue(tmpl *x509.Certificate, pub any) ([]byte, error) {
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
	tmpl.BasicConstraintsValid = true
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
}

// ServerCertificate is a certificate for 127.0.0.1, ::1 and localhost
// signed by the CA, for a TLS server on loopback.
func (ca *CA) ServerCertificate() (tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.server != nil {
		return *ca.server, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("signing the loopback server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	ca.server = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return *ca.server, nil
}

// ServerTLSConfig is a server configuration presenting ServerCertificate,
// HTTP/1.1 only (testenv's proxy hijacks connections to drop them).
func (ca *CA) ServerTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	c, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
}

// WriteServerFiles writes ServerCertificate and its key as PEM files into
// dir (for a server configured by file, like the registry) and returns
// their paths.
func (ca *CA) WriteServerFiles(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	c, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// File writes the CA certificate as a PEM file in a temporary directory of
// the test and returns its path (for SSL_CERT_FILE, --ca-file, a
// rootcertbundle).
func (ca *CA) File(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// CertDir writes the CA certificate as ca.crt into a new directory and
// returns it: the --cert-dir form of containers tools (skopeo, podman).
func (ca *CA) CertDir(t testing.TB) string {
	t.Helper()
	return filepath.Dir(ca.File(t))
}

// Env is the environment that makes a Go subprocess (r8im, worker,
// enqueue, crane) trust the CA and nothing else: SSL_CERT_FILE names the
// file, and SSL_CERT_DIR an empty directory so that the system's roots are
// not read.
func (ca *CA) Env(t testing.TB) []string {
	t.Helper()
	return []string{"SSL_CERT_FILE=" + ca.File(t), "SSL_CERT_DIR=" + t.TempDir()}
}

// ClientTLSConfig trusts the CA only.
func (ca *CA) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
}

// Transport is a clone of http.DefaultTransport that trusts the CA only: give
// it to go-containerregistry (remote.WithTransport) or imageops
// (WithTransport).
func (ca *CA) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ca.ClientTLSConfig()
	return tr
}
