package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds the agent's token to every request of the MCP client.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// runMCP calls the MCP door's query tool n times, one at a time, in one session (after 10
// calls of warm-up), and returns the sorted latencies in milliseconds.
func runMCP(ctx context.Context, url, token string, n, accounts int) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-bench", Version: "1"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url,
		HTTPClient: &http.Client{Transport: bearer{token}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to the MCP door: %w", err)
	}
	defer s.Close()
	call := func(i int) error {
		aid := strconv.Itoa(1 + (i*7919)%accounts)
		res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: "query", Arguments: map[string]any{
			"target": "main", "sql": batchQuery, "params": []*string{&aid}, "purpose": "bench"}})
		if err != nil {
			return fmt.Errorf("query tool: %w", err)
		}
		if res.IsError {
			return fmt.Errorf("query tool refused: %v", res.Content)
		}
		return nil
	}
	for i := range 10 {
		if err := call(i); err != nil {
			return nil, err
		}
	}
	lat := make([]float64, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := call(i); err != nil {
			return nil, err
		}
		lat = append(lat, float64(time.Since(t0))/float64(time.Millisecond))
	}
	slices.Sort(lat)
	return lat, nil
}

// runPgxSequential runs the same one-row SELECT as runMCP n times, one at a time, over one
// direct pgx connection (after 10 of warm-up), and returns the sorted latencies in
// milliseconds: the baseline of the MCP tool's latency.
func runPgxSequential(ctx context.Context, ep endpoint, n, accounts int) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, ep.dsn())
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	call := func(i int) error {
		var balance int64
		return conn.QueryRow(ctx, batchQuery, 1+(i*7919)%accounts).Scan(&balance)
	}
	for i := range 10 {
		if err := call(i); err != nil {
			return nil, err
		}
	}
	lat := make([]float64, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := call(i); err != nil {
			return nil, err
		}
		lat = append(lat, float64(time.Since(t0))/float64(time.Millisecond))
	}
	slices.Sort(lat)
	return lat, nil
}
