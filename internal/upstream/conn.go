package upstream

import (
	"context"
	"net"
	"time"
)

// Conn is an upstream connection a door relays protocol messages on: logged in, idle at a
// message boundary, with what the door needs to greet its client. It is a net.Conn whose
// reads first return any bytes already read from the network but not yet consumed (a
// connection coming back from a session or from its reset may have some).
type Conn struct {
	net.Conn
	// PID and SecretKey are the backend's own key (BackendKeyData); the PID is what the
	// client is shown, the secret is used only by Gatehouse to cancel.
	PID       uint32
	SecretKey []byte
	// ParameterStatuses are the backend's reported settings as of the last reset.
	ParameterStatuses map[string]string
	// TxStatus is the status of the last ReadyForQuery ('I' when handed out).
	TxStatus byte
	// Reused reports whether this connection served an earlier session and was reset since.
	Reused bool

	key     string
	created time.Time
	idle    time.Time // when it was last put back
	unread  []byte
}

// Read returns bytes given back with Unread before reading from the network.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		if len(c.unread) == 0 {
			c.unread = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Buffered reports how many bytes given back with Unread are still to be read: a reader
// that reads the socket itself must take them with Read first.
func (c *Conn) Buffered() int { return len(c.unread) }

// Unread gives back bytes that were read from the connection but not consumed (what a
// relay's buffered reader still held when its session ended); the next Read returns them
// first. b is copied.
func (c *Conn) Unread(b []byte) {
	if len(b) == 0 {
		return
	}
	c.unread = append(append(make([]byte, 0, len(b)+len(c.unread)), b...), c.unread...)
}

// terminate ends the backend politely (Terminate, then close), so the server logs no
// "unexpected EOF on client connection".
func (c *Conn) terminate() {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Conn.Write([]byte{'X', 0, 0, 0, 4})
	_ = c.Conn.Close()
}

// Open connects and logs in as Hijack does and returns the connection ready for relaying.
func Open(ctx context.Context, r Request) (*Conn, error) {
	key, err := Key(r)
	if err != nil {
		return nil, err
	}
	h, err := Hijack(ctx, r)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &Conn{Conn: h.Conn, PID: h.PID, SecretKey: h.SecretKey, ParameterStatuses: h.ParameterStatuses,
		TxStatus: h.TxStatus, key: key, created: now, idle: now}, nil
}
