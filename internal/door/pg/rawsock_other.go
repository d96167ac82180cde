//go:build !linux

package pg

import (
	"io"
	"net"
	"time"
)

// rawSock is the Linux raw-system-call socket reader and writer (rawsock.go); elsewhere the
// relay uses the connections themselves.
type rawSock struct{ io.ReadWriter }

func newRawSock(net.Conn) (*rawSock, bool) { return nil, false }

func (s *rawSock) enableBulk(interface{ SetReadDeadline(time.Time) error }) {}

func (s *rawSock) bulk(bool) {}
