// Drives node-postgres (npm pg) through Gatehouse for the compatibility tests in test/compat:
// simple queries, parameterized queries (the extended protocol, unnamed and named prepared
// statements, text and binary results), transactions, errors with recovery, and cancelling a
// running query with pg_cancel_backend from a second connection (node-postgres has no
// CancelRequest of its own). The connection comes from the PG* environment variables;
// COMPAT_TABLE names the table this client may write. Prints key=value lines that the Go test
// checks; any unexpected error exits non-zero.
'use strict';
const fs = require('fs');
const { Client } = require('pg');

const table = process.env.COMPAT_TABLE;
const out = (k, v) => process.stdout.write(`${k}=${v}\n`);

function config(extra) {
  const mode = process.env.PGSSLMODE || 'disable';
  let ssl = false;
  if (mode === 'verify-full') {
    ssl = { ca: fs.readFileSync(process.env.PGSSLROOTCERT), rejectUnauthorized: true };
  } else if (mode === 'require') {
    ssl = { rejectUnauthorized: false };
  }
  return Object.assign({
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT),
    user: process.env.PGUSER,
    password: process.env.PGPASSWORD,
    database: process.env.PGDATABASE,
    ssl,
  }, extra || {});
}

async function sqlstate(promise) {
  try {
    await promise;
    return 'none';
  } catch (e) {
    return e.code || String(e);
  }
}

async function main() {
  const c = new Client(config());
  await c.connect();
  out('ssl', c.connection.stream.encrypted ? 'on' : 'off');

  let r = await c.query("SELECT 1+1 AS a, 'héllo' AS b");
  out('simple', `${r.rows[0].a} ${r.rows[0].b}`);
  r = await c.query("SELECT 'a' AS v; SELECT 'b' AS v");
  out('multi', r.map((x) => x.rows[0].v).join(','));
  r = await c.query({ text: 'SELECT g FROM generate_series(1, $1::int) AS g', values: [20000], rowMode: 'array' });
  out('rows', `${r.rows.length} ${r.rows.reduce((s, x) => s + x[0], 0)}`);

  r = await c.query('SELECT $1::int + 1 AS a, $2::text || \'!\' AS b', [41, 'hi']);
  out('param_text', `${r.rows[0].a} ${r.rows[0].b}`);
  let last = '';
  for (let i = 0; i < 6; i++) {
    r = await c.query({ name: 'plus-one', text: 'SELECT $1::int + 1 AS a, $2::text || \'!\' AS b', values: [41, 'hi'] });
    last = `${r.rows[0].a} ${r.rows[0].b}`;
  }
  out('prepared', last);
  // Binary results: node-postgres asks for them (Bind result format 1) but decodes every
  // field as a UTF-8 string, so only text columns, whose binary form is their text, decode.
  r = await c.query({ text: 'SELECT $1::text || \'!\' AS b', values: ['hi'], binary: true });
  out('binary_text', r.rows[0].b);

  await c.query('BEGIN');
  await c.query(`INSERT INTO ${table} VALUES ($1, $2)`, [11, 'gone']);
  r = await c.query(`SELECT count(*)::int AS n FROM ${table} WHERE id = 11`);
  out('tx_inside', r.rows[0].n);
  await c.query('ROLLBACK');
  await c.query(`INSERT INTO ${table} VALUES ($1, $2)`, [10, 'kept']);

  out('error', await sqlstate(c.query('SELECT 1/0')));
  out('error_extended', await sqlstate(c.query('SELECT 1/$1::int', [0])));
  out('error_parse', await sqlstate(c.query('SELECT * FROM no_such_table WHERE x = $1', [1])));
  await c.query('BEGIN');
  out('error_tx', await sqlstate(c.query('SELECT 1/0')));
  out('in_failed_tx', await sqlstate(c.query('SELECT 1')));
  await c.query('ROLLBACK');
  r = await c.query("SELECT 'ok' AS v");
  out('recovered', r.rows[0].v);

  if (process.env.COMPAT_DENY === '1') {
    out('deny', await sqlstate(c.query('SELECT * FROM compat_forbidden')));
    out('deny_extended', await sqlstate(c.query('SELECT * FROM compat_forbidden WHERE id = $1', [1])));
    r = await c.query("SELECT 'ok' AS v");
    out('after_deny', r.rows[0].v);
  }

  // Cancel: a second connection cancels the first one's backend.
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  const killer = new Client(config());
  await killer.connect();
  const start = Date.now();
  const sleeping = sqlstate(c.query("SELECT pg_sleep(30), 'node-cancel'"));
  // Wait (up to 15 s) until the upstream runs it, so the cancel cannot arrive first.
  for (let i = 0; i < 300; i++) {
    r = await killer.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", [pid]);
    if (r.rows[0].n > 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  r = await killer.query('SELECT pg_cancel_backend($1::int) AS ok', [pid]);
  out('cancel_sent', r.rows[0].ok);
  out('cancel', await sleeping);
  out('cancel_fast', Date.now() - start < 10000);
  r = await c.query("SELECT 'ok' AS v");
  out('after_cancel', r.rows[0].v);
  await killer.end();
  await c.end();
}

main().catch((e) => {
  // exitCode, not exit(): a pipe write is asynchronous and exit() would drop the message.
  process.stderr.write(`compat.js: ${e && e.stack ? e.stack : e}\n`);
  process.exitCode = 1;
});
