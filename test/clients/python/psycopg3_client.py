#!/usr/bin/python3
"""Drives psycopg 3 (Debian python3-psycopg, libpq underneath) through Gatehouse for the
compatibility tests in test/compat: server-side binding (the extended protocol), client-side
binding (ClientCursor, the simple protocol), binary results, explicit prepared statements,
pipeline mode, COPY text and binary, errors with recovery and cancel. The connection comes
from the PG* environment variables; COMPAT_TABLE names the table this client may write.
Prints key=value lines that the Go test checks; any unexpected exception exits non-zero."""
import os
import threading
import time

import psycopg
import psycopg.errors

table = os.environ["COMPAT_TABLE"]


def out(key, value):
    print(f"{key}={value}", flush=True)


conn = psycopg.connect("", autocommit=True)
out("ssl", "on" if conn.pgconn.ssl_in_use else "off")

# Simple query, through both binding styles.
row = conn.execute("SELECT 1+1, 'héllo'").fetchone()
out("simple", f"{row[0]} {row[1]}")
ccur = psycopg.ClientCursor(conn)
ccur.execute("SELECT 'a'; SELECT 'b'")  # multi-statement string, simple protocol
results = [ccur.fetchone()[0]]
while ccur.nextset():
    results.append(ccur.fetchone()[0])
out("multi", ",".join(results))

rows = conn.execute("SELECT g FROM generate_series(1, %s) AS g", (20000,)).fetchall()
out("rows", f"{len(rows)} {sum(r[0] for r in rows)}")

# Parameters: server-side binding (text and binary results), client-side binding,
# explicitly prepared statements.
row = conn.execute("SELECT %s::int + 1, %s::text || '!'", (41, "hi")).fetchone()
out("param_server", f"{row[0]} {row[1]}")
with conn.cursor(binary=True) as bcur:
    row = bcur.execute("SELECT %s::int + 1, %s::text || '!'", (41, "hi")).fetchone()
    out("param_binary", f"{row[0]} {row[1]}")
    rows = bcur.execute("SELECT g FROM generate_series(1, 20000) AS g").fetchall()
    out("rows_binary", f"{len(rows)} {sum(r[0] for r in rows)}")
row = ccur.execute("SELECT %s::int + 1, %s::text || '!'", (41, "hi")).fetchone()
out("param_client", f"{row[0]} {row[1]}")
for _ in range(6):
    row = conn.execute("SELECT %s::int + 1, %s::text || '!'", (41, "hi"), prepare=True).fetchone()
out("prepared", f"{row[0]} {row[1]}")

# Pipeline mode: several statements in flight before any Sync.
with conn.pipeline():
    curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(10)]
out("pipeline", ",".join(str(c.fetchone()[0]) for c in curs))

# Server-side cursor streaming the rows in batches.
with conn.transaction():
    with conn.cursor(name="stream") as scur:
        scur.itersize = 1000
        scur.execute("SELECT g FROM generate_series(1, 20000) AS g")
        n = s = 0
        for (g,) in scur:
            n += 1
            s += g
out("named_cursor", f"{n} {s}")

# Transaction rolled back, then a committed row.
class Rollback(Exception):
    pass


try:
    with conn.transaction():
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (11, "gone"))
        out("tx_inside", conn.execute(f"SELECT count(*) FROM {table} WHERE id = 11").fetchone()[0])
        raise Rollback()
except Rollback:
    pass
conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (10, "kept"))

# COPY in: text rows and binary rows; COPY out.
cur = conn.cursor()
with cur.copy(f"COPY {table} (id, name) FROM STDIN") as cp:
    cp.write_row((1, "c1"))
    cp.write_row((2, "c2"))
with cur.copy(f"COPY {table} (id, name) FROM STDIN WITH (FORMAT binary)") as cp:
    cp.set_types(["int4", "text"])
    cp.write_row((3, "c3"))
with cur.copy(f"COPY (SELECT id, name FROM {table} WHERE id < 10 ORDER BY id) TO STDOUT") as cp:
    for r in cp.rows():
        out("copy_out", f"{r[0]},{r[1]}")
with cur.copy(f"COPY (SELECT id, name FROM {table} WHERE id < 10 ORDER BY id) TO STDOUT WITH (FORMAT binary)") as cp:
    cp.set_types(["int4", "text"])
    out("copy_out_binary", ",".join(f"{r[0]}:{r[1]}" for r in cp.rows()))

# Errors, then recovery on the same connection, in both binding styles and in a transaction.
for name, c in (("error_server", conn.cursor()), ("error_client", ccur)):
    try:
        c.execute("SELECT 1/%s", (0,))
        out(name, "none")
    except psycopg.Error as e:
        out(name, e.sqlstate)
try:
    with conn.transaction():
        conn.execute("SELECT 1/0")
except psycopg.errors.DivisionByZero as e:
    out("error_tx", e.sqlstate)
out("recovered", conn.execute("SELECT 'ok'").fetchone()[0])

# The deny path (only when Gatehouse enforces the compat policy): 42501 in both binding
# styles and inside a pipeline; the session stays usable.
if os.environ.get("COMPAT_DENY") == "1":
    for name, c in (("deny_server", conn.cursor()), ("deny_client", ccur)):
        try:
            c.execute("SELECT * FROM compat_forbidden WHERE id = %s", (1,))
            out(name, "none")
        except psycopg.Error as e:
            out(name, e.sqlstate)
    try:
        with conn.pipeline():
            conn.execute("SELECT %s::int", (1,))
            conn.execute("SELECT * FROM compat_forbidden WHERE id = %s", (1,))
            conn.execute("SELECT %s::int", (3,))
        out("deny_pipeline", "none")
    except psycopg.Error as e:
        out("deny_pipeline", e.sqlstate)
    out("after_deny", conn.execute("SELECT 'ok'").fetchone()[0])

# Cancel from another thread: cancel_safe() (psycopg >= 3.2, non-blocking libpq cancel) when
# this psycopg has it, else cancel() (PQcancel). Both send a CancelRequest.
def wait_running(marker):
    """Waits (up to 15 s) until the upstream runs the marked statement, watching from a
    second connection, so the cancel cannot arrive before the statement does."""
    with psycopg.connect("", autocommit=True) as watcher:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%%' || %s || '%%' AND pid <> pg_backend_pid()", (marker,)).fetchone()[0] > 0:
                break
            time.sleep(0.05)


def cancel_later():
    wait_running("psycopg3-cancel")
    if hasattr(conn, "cancel_safe"):
        conn.cancel_safe()
    else:
        conn.cancel()


t = threading.Thread(target=cancel_later)
t.start()
start = time.monotonic()
try:
    conn.execute("SELECT pg_sleep(30), 'psycopg3-cancel'")
    out("cancel", "none")
except psycopg.errors.QueryCanceled as e:
    out("cancel", e.sqlstate)
t.join()
out("cancel_fast", "true" if time.monotonic() - start < 10 else "false")
out("after_cancel", conn.execute("SELECT 'ok'").fetchone()[0])
conn.close()
