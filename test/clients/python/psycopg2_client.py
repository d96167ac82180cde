#!/usr/bin/python3
"""Drives psycopg2 (Debian python3-psycopg2, libpq underneath) through Gatehouse for the
compatibility tests in test/compat. The connection comes from the PG* environment variables;
COMPAT_TABLE names the table this client may write. Prints key=value lines that the Go test
checks; any unexpected exception exits non-zero."""
import os
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions

table = os.environ["COMPAT_TABLE"]


def out(key, value):
    print(f"{key}={value}", flush=True)


conn = psycopg2.connect("")  # everything from PG* variables
out("ssl", "on" if conn.info.ssl_in_use else "off")
cur = conn.cursor()

# Simple query (no parameters: psycopg2 always sends the simple protocol, interpolating
# parameters client side).
cur.execute("SELECT 1+1, 'héllo'")
a, b = cur.fetchone()
out("simple", f"{a} {b}")
cur.execute("SELECT 'a'; SELECT 'b'")  # multi-statement string: the last result is kept
out("multi", cur.fetchone()[0])

cur.execute("SELECT g FROM generate_series(1, %s) AS g", (20000,))
rows = cur.fetchall()
out("rows", f"{len(rows)} {sum(r[0] for r in rows)}")

# Server-side cursor (DECLARE/FETCH) streaming the same rows in batches.
named = conn.cursor(name="stream")
named.itersize = 1000
named.execute("SELECT g FROM generate_series(1, 20000) AS g")
n = s = 0
for (g,) in named:
    n += 1
    s += g
named.close()
out("named_cursor", f"{n} {s}")
conn.rollback()

cur.execute("SELECT %s::int + 1, %s::text || '!'", (41, "hi"))
a, b = cur.fetchone()
out("param_text", f"{a} {b}")
cur.execute("PREPARE p(int, text) AS SELECT $1 + 1, $2 || '!'")
for _ in range(3):
    cur.execute("EXECUTE p(%s, %s)", (41, "hi"))
    a, b = cur.fetchone()
out("prepared", f"{a} {b}")
cur.execute("DEALLOCATE p")
conn.commit()

# Transaction (psycopg2 opens one implicitly) rolled back, then a committed row.
cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (11, "gone"))
cur.execute(f"SELECT count(*) FROM {table} WHERE id = 11")
out("tx_inside", cur.fetchone()[0])
conn.rollback()
cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (10, "kept"))
conn.commit()

# COPY in and out.
import io
cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT csv)", io.StringIO("1,c1\n2,c2\n3,c3\n"))
conn.commit()
buf = io.StringIO()
cur.copy_expert(f"COPY (SELECT id, name FROM {table} WHERE id < 10 ORDER BY id) TO STDOUT WITH (FORMAT csv)", buf)
for line in buf.getvalue().splitlines():
    out("copy_out", line)
conn.commit()

# Error, then recovery on the same connection.
try:
    cur.execute("SELECT 1/0")
    out("error", "none")
except psycopg2.Error as e:
    out("error", e.pgcode)
try:
    cur.execute("SELECT 1")
    out("in_failed_tx", "yes")
except psycopg2.Error as e:
    out("in_failed_tx", e.pgcode)
conn.rollback()
cur.execute("SELECT 'ok'")
out("recovered", cur.fetchone()[0])
conn.commit()

# The deny path (only when Gatehouse enforces the compat policy): 42501, session usable.
if os.environ.get("COMPAT_DENY") == "1":
    try:
        cur.execute("SELECT * FROM compat_forbidden")
        out("deny", "none")
    except psycopg2.Error as e:
        out("deny", e.pgcode)
    conn.rollback()
    cur.execute("SELECT 'ok'")
    out("after_deny", cur.fetchone()[0])
    conn.commit()

# Cancel from another thread (PQcancel: a CancelRequest on a new connection).
def wait_running(marker):
    """Waits (up to 15 s) until the upstream runs the marked statement, watching from a
    second connection, so the cancel cannot arrive before the statement does."""
    watcher = psycopg2.connect("")
    watcher.autocommit = True
    wcur = watcher.cursor()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        wcur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%%' || %s || '%%' AND pid <> pg_backend_pid()", (marker,))
        if wcur.fetchone()[0] > 0:
            break
        time.sleep(0.05)
    watcher.close()


def cancel_later():
    wait_running("psycopg2-cancel")
    conn.cancel()


t = threading.Thread(target=cancel_later)
t.start()
start = time.monotonic()
try:
    cur.execute("SELECT pg_sleep(30), 'psycopg2-cancel'")
    out("cancel", "none")
except psycopg2.errors.QueryCanceled as e:
    out("cancel", e.pgcode)
t.join()
out("cancel_fast", "true" if time.monotonic() - start < 10 else "false")
conn.rollback()
cur.execute("SELECT 'ok'")
out("after_cancel", cur.fetchone()[0])
conn.close()
