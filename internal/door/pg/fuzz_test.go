package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
)

// offlineRelay is a relay with no network: client messages are gated and "forwarded" into
// a buffer, upstream messages are written to out. It drives the same code as a live session.
func offlineRelay(in io.Reader, masker gate.MaskPlanner) (*relay, *bytes.Buffer) {
	up := &bytes.Buffer{}
	out := &bytes.Buffer{}
	s := &Server{Gate: &gate.Gate{Policy: &testPolicy{}, Masker: masker}, Log: slog.New(slog.DiscardHandler)}
	r := &relay{
		srv: s, sess: &gate.Session{ID: "fuzz"},
		cr: newFrameReader(in, 1<<16), ur: newFrameReader(bytes.NewReader(nil), 1<<16),
		uw: newUpWriter(up), nonce: "n",
		stmts: map[string]clientStmt{}, portals: map[string]clientStmt{},
		stmtCols: map[string][]gate.Column{}, portalCols: map[string][]gate.Column{}, bound: map[string]boundShape{},
		client: nopConn{}, up: nopConn{},
	}
	r.out = newClientOut(out, r.recordFailed)
	return r, out
}

// nopConn satisfies net.Conn for offline relays.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

func frame(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

func encode(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// FuzzFrontendReader feeds arbitrary bytes to the client-side message reader and the
// decoders behind it: whatever arrives, the result is a message or a clear error, never a
// panic, a hang or an allocation beyond the size limit.
func FuzzFrontendReader(f *testing.F) {
	f.Add(encode(f, &pgproto3.Query{String: "select 1"}))
	f.Add(encode(f, &pgproto3.Parse{Name: "s", Query: "select $1", ParameterOIDs: []uint32{23}},
		&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}}, ResultFormatCodes: []int16{1}},
		&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{}))
	f.Add(encode(f, &pgproto3.FunctionCall{Function: 1397, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("-1")}}))
	f.Add(encode(f, &pgproto3.CopyData{Data: []byte("1\tx\n")}, &pgproto3.CopyDone{}, &pgproto3.CopyFail{Message: "x"}, &pgproto3.Flush{}, &pgproto3.Terminate{}))
	f.Add(encode(f, &pgproto3.Query{String: "select * from forbidden_table"}))
	f.Add([]byte{'Q', 0x40, 0, 0, 0})
	f.Add([]byte{'B', 0, 0, 0, 8, 0, 0, 0xff, 0xff})
	f.Add(frame('E', []byte{0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, _ := offlineRelay(bytes.NewReader(data), &ssnMasker{})
		ctx := context.Background()
		for i := 0; i < 1000; i++ {
			fr, err := r.cr.next()
			if err != nil {
				var fe *errFrame
				if !errors.Is(err, io.EOF) && !errors.As(err, &fe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(fr) < 5 || len(fr) > r.cr.max+1 {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			stop, err := r.fromClient(ctx, fr)
			if stop || err != nil {
				return
			}
		}
	})
}

// FuzzBackendMessages feeds arbitrary upstream messages to the response side with a
// pending query and execute, so malformed server output cannot crash the door either.
func FuzzBackendMessages(f *testing.F) {
	rd, _ := (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("ssn"), DataTypeOID: 25}}}).Encode(nil)
	dr, _ := (&pgproto3.DataRow{Values: [][]byte{[]byte("123")}}).Encode(nil)
	cc, _ := (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(nil)
	er, _ := (&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "x"}).Encode(nil)
	z, _ := (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(nil)
	f.Add(append(append(append(append(rd, dr...), cc...), er...), z...))
	f.Add([]byte{'T', 0, 0, 0, 6, 0, 5})
	f.Add([]byte{'D', 0, 0, 0, 10, 0, 1, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, out := offlineRelay(bytes.NewReader(nil), &ssnMasker{})
		r.ur = newFrameReader(bytes.NewReader(data), 1<<16)
		r.push(&pending{request: request{kind: pQuery, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow, MaxRows: 3}}}})
		r.push(&pending{request: request{kind: pDescribeP, name: ""}})
		r.push(&pending{request: request{kind: pExecute, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow}}}})
		r.push(&pending{request: request{kind: pSync}})
		ctx := context.Background()
		for i := 0; i < 1000; i++ {
			fr, err := r.ur.next()
			if err != nil {
				return
			}
			if err := r.fromUpstream(ctx, fr); err != nil {
				return
			}
		}
		_ = out
	})
}
