//go:build unix

package upstream

import (
	"crypto/tls"
	"errors"
	"syscall"
)

// alive reports whether an idle connection is still open with nothing waiting to be read.
// An idle backend sends nothing; bytes waiting mean it ended the session (a FATAL from
// pg_terminate_backend, a shutdown) or sent something nobody would see; end of file means
// the server closed it. It peeks at the socket without blocking: one syscall, no read.
func alive(c *Conn) bool {
	if len(c.unread) > 0 {
		return false
	}
	nc := c.Conn
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = (errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK))
		return true // done: never wait for readiness
	})
	return err == nil && open
}
