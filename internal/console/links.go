package console

import (
	"errors"
	"net/http"
	"time"
)

// signInLink is a one-click sign-in for a credential: single-use, short-lived, and honoured
// only from this machine. The demo prints one per persona so a newcomer opens the console
// as that persona without pasting a token.
type signInLink struct {
	secret  string
	expires time.Time
}

// maxLinks bounds the pending one-click links.
const maxLinks = 1000

// SignInLink returns a single-use URL that signs its opener in with secret (a Gatehouse
// token, verified when the link is opened, so revoking the token voids it) within ttl. The
// link works only for a browser on this machine.
func (c *Console) SignInLink(secret string, ttl time.Duration) (string, error) {
	if secret == "" || ttl <= 0 {
		return "", errors.New("sign-in link: a credential and a lifetime are required")
	}
	id := randomToken(24)
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, l := range c.links {
		if now.After(l.expires) {
			delete(c.links, k)
		}
	}
	if len(c.links) >= maxLinks {
		return "", errors.New("sign-in link: too many links pending")
	}
	c.links[id] = &signInLink{secret: secret, expires: now.Add(ttl)}
	return c.opts.URL() + "login/link/" + id, nil
}

// loginLink consumes a one-click link.
func (c *Console) loginLink(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c.mu.Lock()
	l := c.links[id]
	delete(c.links, id)
	c.mu.Unlock()
	if !loopbackRequest(r) {
		c.signInFailed(r, "link", errors.New("one-click link opened from another machine"))
		c.renderLogin(w, r, http.StatusForbidden, "One-click sign-in links work only on the machine that runs Gatehouse.")
		return
	}
	if l == nil || c.opts.Now().After(l.expires) {
		c.signInFailed(r, "link", errors.New("unknown, used or expired one-click link"))
		c.renderLogin(w, r, http.StatusUnauthorized, "That sign-in link was already used or has expired; sign in below.")
		return
	}
	id2, err := c.opts.Auth.AuthenticateBearer(r.Context(), l.secret)
	if err != nil || id2 == nil {
		c.signInFailed(r, "link", err)
		c.renderLogin(w, r, http.StatusUnauthorized, "Invalid credentials.")
		return
	}
	if c.startSession(w, r, id2, "one-click link") {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	}
}
