package ledger

import "crypto/ed25519"

// Checkpoint kinds an evidence pack adds to the checkpoints it carries, so that a slice of a
// chain (one audit period) verifies offline on its own.
const (
	// CheckpointPeriodStart anchors an exported slice: it names the event just before the
	// slice and its hash, which the slice's first event links to. Verify starts the chain
	// after it, as after a retention anchor.
	CheckpointPeriodStart = "period-start"
	// CheckpointPeriodEnd seals the slice's last event, so a verifier can tell a slice cut
	// short from a complete one.
	CheckpointPeriodEnd = "period-end"
)

// Sign signs the checkpoint with the ledger's key (the one whose public half `gatehouse
// audit pubkey` prints). Exported for evidence packs, which vouch for the ends of the
// chain slice they carry.
func (c *Checkpoint) Sign(key ed25519.PrivateKey) { c.sign(key) }
