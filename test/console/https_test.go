package console

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
)

// With listen.https the console is served over TLS with Gatehouse's generated certificate:
// a client trusting the CA signs in with a token and gets Secure cookies, and refusal
// messages link the HTTPS console.
func TestConsoleOverHTTPS(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) { c.Listen.HTTPS = "127.0.0.1:0" }})
	token := p.Token(t, "alice", "human", "security")
	addr := p.Instance.HTTPSAddr()
	if addr == "" {
		t.Fatal("no HTTPS listener")
	}
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	base := "https://" + addr + "/console/"

	resp, err := client.Get(base + "login")
	if err != nil {
		t.Fatalf("GET the sign-in page over HTTPS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var csrf string
	for _, c := range resp.Cookies() {
		if c.Name == "gatehouse_console_login" {
			csrf = c.Value
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
				t.Fatalf("sign-in cookie over HTTPS: Secure=%v HttpOnly=%v SameSite=%v", c.Secure, c.HttpOnly, c.SameSite)
			}
		}
	}
	if resp.StatusCode != 200 || csrf == "" || !strings.Contains(string(body), csrf) {
		t.Fatalf("sign-in page: HTTP %d, csrf %q", resp.StatusCode, csrf)
	}
	noFollow := *client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = noFollow.PostForm(base+"login/token", url.Values{"csrf": {csrf}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	secure := false
	for _, c := range resp.Cookies() {
		if c.Name == "gatehouse_console" {
			secure = c.Secure && c.HttpOnly && c.SameSite == http.SameSiteLaxMode && c.MaxAge > 0
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Fatalf("token sign-in over HTTPS: HTTP %d, cookies %v", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	resp, err = client.Get(base + "sessions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `id="viewer">alice<`) {
		t.Fatalf("sessions page over HTTPS: HTTP %d\n%s", resp.StatusCode, body)
	}
}
