package testkit

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestStartPostgres(t *testing.T) {
	pg := StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE TABLE t(x int); INSERT INTO t VALUES (41)")
	c, err := pgconn.Connect(context.Background(), pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	res := c.ExecParams(context.Background(), "SELECT x+1 FROM t", nil, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "42" {
		t.Fatalf("got %v %v", res.Rows, res.Err)
	}
	// Wrong password must be refused: the cluster really uses SCRAM.
	bad := *pg
	bad.Password = "wrong"
	if _, err := pgconn.Connect(context.Background(), bad.DSN("postgres")); err == nil {
		t.Fatal("connect with a wrong password succeeded")
	}
}
