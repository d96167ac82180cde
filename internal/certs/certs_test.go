package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestAutoIssuesVerifiableCertAndKeepsCA(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Auto(dir, []string{"db.internal"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(CAPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file is not PEM")
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, name := range []string{"localhost", "127.0.0.1", "db.internal"} {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("verify-full as %s: %v", name, err)
		}
		c.Close()
	}
	if _, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "evil.example"}); err == nil {
		t.Fatal("certificate accepted for a name it does not cover")
	}
	// A second start keeps the CA (clients keep trusting it) and reissues for a new host.
	if _, err := Auto(dir, []string{"other.internal"}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(CAPath(dir))
	if string(again) != string(caPEM) {
		t.Fatal("CA changed on restart")
	}
	st, _ := os.Stat(filepath.Join(dir, caKeyFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v", st.Mode())
	}
}
