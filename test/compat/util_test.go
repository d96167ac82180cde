package compat

import (
	"errors"
	"strconv"
	"strings"
)

var errMissingSummary = errors.New("pgbench printed no transaction count or tps")

func splitLines(s string) []string { return strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") }

func hasPrefixField(line, prefix string) bool { return strings.HasPrefix(line, prefix) }

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func firstInt(s string) (int64, error) {
	v := firstField(s)
	// "12345/12345" appears when a run was limited by -t.
	v, _, _ = strings.Cut(v, "/")
	return strconv.ParseInt(v, 10, 64)
}
