package ledger

import "strings"

// A policy.reload event says which policy it put in force: its Message is
// "policy HASH from PATH" (the policy's hash, as statements' decisions and the server log
// name it, and its file). Reloads recorded before carry the path alone.

// PolicyReloadMessage is the Message of a policy.reload event for the policy of hash loaded
// from path.
func PolicyReloadMessage(path, hash string) string {
	return "policy " + hash + " from " + path
}

// ParsePolicyReload returns the file and the policy hash a policy.reload event's Message
// names; hash is empty for a reload recorded before events carried it.
func ParsePolicyReload(msg string) (path, hash string) {
	rest, ok := strings.CutPrefix(msg, "policy ")
	if !ok {
		return msg, ""
	}
	hash, path, ok = strings.Cut(rest, " from ")
	if !ok || hash == "" || strings.ContainsAny(hash, " \t\n") {
		return msg, ""
	}
	return path, hash
}
