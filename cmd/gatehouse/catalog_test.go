package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

// `gatehouse catalog show DATABASE@TARGET` lists the catalog a dbname=DATABASE@TARGET
// session reads: another database on the target's server, with the policy's overrides.
func TestCatalogShowOtherDatabase(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "postgres", "CREATE DATABASE shop")
	pg.Exec(t, "shop", "CREATE TABLE buyers(id int, email text, zip int); INSERT INTO buyers VALUES (1, 'a@example.com', 12345)")
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(pg.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gatehouse.yaml")
	yaml := fmt.Sprintf(`data_dir: %s
targets:
  - name: main
    engine: postgres
    environment: dev
    host: %s
    port: %d
    database: app
    user: %s
    password_file: %s
    tls: {mode: disable}
`, filepath.Join(dir, "data"), pg.Host, pg.Port, pg.User, pw)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEHOUSE_CONFIG", "")
	t.Setenv("GATEHOUSE_DATA_DIR", "")
	out, err := run(t, "catalog", "show", "shop@main", "--all", "--config", cfg)
	if err != nil {
		t.Fatalf("catalog show shop@main: %v\n%s", err, out)
	}
	var email, zip string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "public.buyers.email "):
			email = line
		case strings.HasPrefix(line, "public.buyers.zip "):
			zip = line
		}
	}
	if !strings.Contains(email, " email ") || !strings.Contains(zip, " none ") {
		t.Errorf("catalog of shop@main:\n%s", out)
	}
	if out, err := run(t, "catalog", "show", "shop@nosuch", "--config", cfg); err == nil || !strings.Contains(err.Error(), `target "nosuch"`) {
		t.Errorf("unknown target: %v\n%s", err, out)
	}
}
