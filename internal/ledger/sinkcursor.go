package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// SinkCursorDir is the directory, inside the data directory, that holds one cursor file per
// sink and chain: how far the sink has been delivered, so that after a restart (or an
// outage of the receiver) delivery resumes there instead of at the chain head.
const SinkCursorDir = "ledger-sinks"

// ResumableSink is a sink whose deliveries are remembered in a cursor file, so delivery is
// at-least-once across restarts: the runner starts from the cursor and reads from the store
// what the sink missed, then follows new commits. Wrap a sink with Resumable.
type ResumableSink struct {
	Sink
	// ID identifies the sink across restarts (derived from its configuration: type and
	// path or URL). It is only ever stored hashed, as it may hold credentials.
	ID string
	// Dir is where the cursor files live (normally <data dir>/ledger-sinks).
	Dir string
}

// Resumable makes s remember its deliveries under dir, keyed by id.
func Resumable(s Sink, dir, id string) *ResumableSink {
	return &ResumableSink{Sink: s, ID: id, Dir: dir}
}

// sinkCursor is the durable position of one sink on one chain: the seq and hash of the
// last event the sink acknowledged.
type sinkCursor struct {
	path string

	Sink     string    `json:"sink"` // the sink's name, for people reading the file
	Instance string    `json:"instance"`
	Seq      int64     `json:"seq"`
	Hash     string    `json:"hash,omitempty"`
	Time     time.Time `json:"time"`
}

// cursorFor returns the cursor file of sink rs on instance's chain (not yet loaded).
func cursorFor(rs *ResumableSink, instance string) *sinkCursor {
	sum := sha256.Sum256([]byte(rs.ID + "\x00" + instance))
	return &sinkCursor{path: filepath.Join(rs.Dir, hex.EncodeToString(sum[:16])+".json"), Sink: rs.Name(), Instance: instance}
}

// load reads the cursor; found is false when the sink has never been started on this chain.
func (c *sinkCursor) load() (found bool, err error) {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read sink cursor %s: %w", c.path, err)
	}
	var v sinkCursor
	if err := json.Unmarshal(b, &v); err != nil {
		return false, fmt.Errorf("read sink cursor %s: %w", c.path, err)
	}
	if v.Instance != c.Instance || v.Seq < 0 {
		return false, fmt.Errorf("read sink cursor %s: it is for chain %q at seq %d, not for %q", c.path, v.Instance, v.Seq, c.Instance)
	}
	c.Seq, c.Hash, c.Time = v.Seq, v.Hash, v.Time
	return true, nil
}

// save stores the cursor atomically and durably: a temporary file, fsync'd, renamed over
// the old one, and the directory fsync'd, so a crash leaves either the old or the new
// position, never a torn file.
func (c *sinkCursor) save(seq int64, hash string) error {
	c.Seq, c.Hash, c.Time = seq, hash, time.Now().UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode sink cursor: %w", err)
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save sink cursor: %w", err)
	}
	f, err := os.CreateTemp(dir, ".cursor-*")
	if err != nil {
		return fmt.Errorf("save sink cursor: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save sink cursor %s: %w", c.path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save sink cursor: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save sink cursor: sync %s: %w", dir, err)
	}
	return nil
}

// redactURL drops the user information and the query of a URL (where tokens tend to
// live), for names that end up in logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "..."
	}
	u.Fragment = ""
	return u.String()
}
