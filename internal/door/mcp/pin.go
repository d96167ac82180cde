package mcp

import (
	"fmt"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TargetHeader pins an MCP connection to one target. An agent host's entry for one database
// (`gatehouse mcp --target prod-db`, or the header in an HTTP host's entry, both printed by
// `gatehouse mcp config --target`) sends it on every request: the tools then take that target
// when the agent names none, refuse any other, and list_targets lists only it. Policy still
// decides what the identity may do there; the pin only narrows, it never grants.
const TargetHeader = "Gatehouse-Target"

// pinnedTarget is the target the caller's connection is pinned to ("" for none).
func pinnedTarget(req *sdk.CallToolRequest) string {
	if req == nil || req.Extra == nil || req.Extra.Header == nil {
		return ""
	}
	return strings.TrimSpace(req.Extra.Header.Get(TargetHeader))
}

// targetOf is the target a call works on: the one it names, or the connection's pinned
// target when it names none. A call that names another target than the pinned one, or none
// on a connection without a pin, is refused with what to do instead.
func targetOf(req *sdk.CallToolRequest, asked string) (string, error) {
	pin := pinnedTarget(req)
	switch {
	case pin == "" && asked == "":
		return "", fmt.Errorf("name a target: call list_targets for the targets you can use")
	case pin == "":
		return asked, nil
	case asked == "" || asked == pin:
		return pin, nil
	}
	return "", fmt.Errorf("this connection is pinned to target %q (its %s header, set by gatehouse mcp --target): it cannot reach target %q; use a connection configured for that target", pin, TargetHeader, asked)
}
