#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmarks need on a Debian machine: PostgreSQL
# server binaries, the real clients (psql, pgbench, psycopg 2 and 3, SQLAlchemy, pgJDBC + a
# JDK, node-postgres), PgBouncer for benchmark comparisons, headless Chromium for the
# console's browser tests, Go modules and staticcheck.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in postgresql-15 postgresql-client-15 python3 python3-psycopg2 python3-psycopg python3-sqlalchemy \
         libpostgresql-jdbc-java pgbouncer openssl ca-certificates chromium; do
  have "$p" || need+=("$p")
done
# Java and Node may come from elsewhere than Debian (a JDK or NodeSource build already on the
# machine); only install Debian's when the commands are missing.
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts a cluster of its own; tests never use it (they start their own).

if [ ! -d test/clients/node/node_modules/pg ]; then
  echo "deps: installing node-postgres"
  (cd test/clients/node && npm ci --silent --no-audit --no-fund 2>/dev/null || npm install --silent --no-audit --no-fund)
fi
if [ ! -f test/clients/mcpnode/node_modules/@modelcontextprotocol/sdk/package.json ]; then
  echo "deps: installing the TypeScript MCP SDK client"
  (cd test/clients/mcpnode && npm ci --silent --no-audit --no-fund 2>/dev/null || npm install --silent --no-audit --no-fund)
fi

go mod download
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
  echo "deps: installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.6.1
fi
