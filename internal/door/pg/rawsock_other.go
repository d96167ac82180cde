//go:build !linux

package pg

import (
	"io"
	"net"
)

// rawSock is the Linux raw-system-call socket reader and writer (rawsock.go); elsewhere the
// relay uses the connections themselves.
type rawSock struct{ io.ReadWriter }

func newRawSock(net.Conn) (*rawSock, bool) { return nil, false }
