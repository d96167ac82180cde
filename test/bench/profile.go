package main

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// profileTop is the top five functions of a CPU profile by their own time, as `go tool
// pprof -top` prints them (with its summary lines), or why there is none.
func profileTop(ctx context.Context, bin, profile string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=5", bin, profile).CombinedOutput()
	if err != nil {
		return "  (go tool pprof failed: " + err.Error() + ": " + lastLines(string(out), 5) + ")"
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// Drop pprof's first lines (file, build id, type, time) but keep its summary.
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, "  "+l)
	}
	return strings.Join(keep, "\n")
}
