package maske2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// mcpBearer adds an Authorization header to every request of an MCP client.
type mcpBearer struct{ token string }

func (b mcpBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func mcpConnect(t *testing.T, ctx context.Context, url, token string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "maske2e-agent", Version: "1"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url,
		HTTPClient: &http.Client{Transport: mcpBearer{token}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect to the MCP door: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mcpQuery runs sql through the MCP door's query tool and returns every byte of the tool
// result (text and structured content), the result's cells as text, and whether it was a
// tool error.
func mcpQuery(ctx context.Context, s *sdk.ClientSession, sql string, args []any) ([]byte, [][]string, bool, error) {
	params := make([]*string, len(args))
	for i, a := range args {
		v := fmt.Sprint(a)
		params[i] = &v
	}
	in := map[string]any{"target": "main", "sql": sql, "purpose": "maske2e"}
	if len(params) > 0 {
		in["params"] = params
	}
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "query", Arguments: in})
	if err != nil {
		return nil, nil, false, fmt.Errorf("protocol error: %w", err)
	}
	var all []byte
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			all = append(all, tc.Text...)
			text.WriteString(tc.Text)
		}
	}
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return nil, nil, false, err
		}
		all = append(all, b...)
	}
	if res.IsError {
		return all, nil, true, nil
	}
	var r struct {
		Rows [][]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(text.String()), &r); err != nil {
		return all, nil, false, fmt.Errorf("query result is not JSON: %w: %.300s", err, text.String())
	}
	var cells [][]string
	for _, row := range r.Rows {
		out := make([]string, len(row))
		for i, v := range row {
			switch x := v.(type) {
			case nil:
			case string:
				out[i] = x
			default:
				b, _ := json.Marshal(x)
				out[i] = string(b)
			}
		}
		cells = append(cells, out)
	}
	// JSON escapes (\u003c, \") could hide a value from a byte search: search the decoded
	// cells too.
	for _, row := range cells {
		all = append(all, strings.Join(row, "\x00")...)
	}
	return all, cells, false, nil
}

// TestMCPMasking runs every read query of the masked-data suite through the MCP door's query
// tool: no seeded sensitive value, and no listed derived value, is in any byte of a masked
// agent's tool result; a compliance identity gets the raw values for the same queries (so the
// search can find a leak).
func TestMCPMasking(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	fx := newFixture()
	seed(t, pg, fx)
	p := servertest.Start(t, servertest.Options{PolicyYAML: "default", Environment: "prod", Upstream: pg,
		Configure: func(c *config.Config) { c.Listen.MCP = "127.0.0.1:0" }})
	ctx := ctxT(t, 5*time.Minute)
	url := "http://" + p.Instance.MCPAddr() + "/mcp"
	masked := mcpConnect(t, ctx, url, p.Token(t, "support-bot", "agent"))
	raw := mcpConnect(t, ctx, url, p.Token(t, "auditor", "agent", "compliance"))

	for _, q := range readQueries {
		t.Run(q.name, func(t *testing.T) {
			all, cells, isErr, err := mcpQuery(ctx, masked, q.sql, q.args)
			if err != nil || isErr {
				t.Fatalf("masked agent: tool error %v, %v: %.400s", isErr, err, all)
			}
			if len(cells) == 0 {
				t.Fatalf("masked agent: no rows: %.400s", all)
			}
			if found := fx.leaks(all); len(found) > 0 {
				t.Errorf("seeded values in the masked agent's tool result: %v", found)
			}
			if q.forbidden != nil {
				bad := map[string]bool{}
				for _, v := range q.forbidden(fx) {
					bad[v] = true
				}
				for _, r := range cells {
					for _, c := range r {
						if bad[c] {
							t.Errorf("derived raw value as a cell: %q", c)
						}
					}
				}
			}
			if q.forbiddenSub != nil {
				for _, frag := range q.forbiddenSub(fx) {
					for _, r := range cells {
						for _, c := range r {
							if strings.Contains(c, frag) {
								t.Errorf("derived raw fragment %q in cell %q", frag, c)
							}
						}
					}
				}
			}

			rawAll, _, isErr, err := mcpQuery(ctx, raw, q.sql, q.args)
			if err != nil || isErr {
				t.Fatalf("compliance: tool error %v, %v: %.400s", isErr, err, rawAll)
			}
			if !q.noRaw && len(fx.leaks(rawAll)) == 0 {
				t.Errorf("compliance sees no raw value; the leak search would find nothing: %.300s", rawAll)
			}
		})
	}
}
