package main

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// profileTop is what a CPU profile says first: the top five functions by their own time, as
// `go tool pprof -top` prints them, then the top five of Gatehouse's own functions by
// cumulative time (where the runtime and syscall time at the top comes from), or why
// there is nothing to say.
func profileTop(ctx context.Context, bin, profile string) string {
	flat := pprofTop(ctx, bin, profile, "-top", "-nodecount=5")
	cum := pprofTop(ctx, bin, profile, "-top", "-cum", "-nodecount=5", "-show=gatehouse/internal")
	return flat + "\n\n  Gatehouse's own functions, top five by cumulative time:\n" + cum
}

func pprofTop(ctx context.Context, bin, profile string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), bin, profile)...).CombinedOutput()
	if err != nil {
		return "  (go tool pprof failed: " + err.Error() + ": " + lastLines(string(out), 5) + ")"
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// Drop pprof's first lines (file, build id, type, time, filters) but keep its summary.
		for _, p := range []string{"File:", "Build ID:", "Type:", "Time:", "Active filters:", "   show="} {
			if strings.HasPrefix(l, p) {
				l = ""
				break
			}
		}
		if l != "" {
			keep = append(keep, "  "+l)
		}
	}
	return strings.Join(keep, "\n")
}
