#!/bin/bash
# pgbench-cpu.sh NAME BIN [pgbench args...] — one quick CPU-per-transaction measure of a Gatehouse
# binary, for comparing two builds by alternating them (`make bench` is the full table):
# a private throwaway PostgreSQL 15 cluster (initdb as user postgres, pgbench scale 10; kept
# in /tmp/pbcpu-NAME between runs, ports derived from NAME), `BIN serve` in front of it with
# the built-in policy and the embedded ledger, pgbench through it; prints TPS, Gatehouse's
# CPU (user+system from /proc/PID/stat) per transaction and the bytes it had written to disk
# per transaction (/proc/PID/io write_bytes) and its threads' context switches per transaction. No pgbench args: TPC-B; `-S`, `-S -M extended`.
# Env: CLIENTS (8), DURATION (8 s), PROFILE=file (serve --cpuprofile), DURABILITY (ledger.durability),
# PERF=1 (perf record -g of serve for 4 s into /tmp/pbcpu-NAME/perf.data), STRACE=1 (strace -c -f),
# SYSCOUNT=1 (system calls, context switches and page faults per transaction over 4 s: perf stat on
# the syscall tracepoints, which unlike strace barely slows the run),
# KEEP=1 (leave the cluster running). Needs root (runuser), loopback only.
set -e
NAME=$1; BIN=$2; shift 2
H=$(echo "$NAME" | cksum | cut -d' ' -f1); PGP=$((20000 + H % 10000)); GHP=$((PGP+10000)); HTP=$((PGP+20000))
D=/tmp/pbcpu-$NAME; PGB=/usr/lib/postgresql/15/bin
if [ ! -f $D/ready ]; then
  rm -rf $D; mkdir -p $D; chmod 777 $D; echo benchpw > $D/pw; chmod 644 $D/pw
  runuser -u postgres -- $PGB/initdb -D $D/pg -U bench --auth=scram-sha-256 --pwfile=$D/pw >/dev/null
  touch $D/ready
fi
runuser -u postgres -- $PGB/pg_ctl -D $D/pg -o "-p $PGP -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200" -l $D/pg.log start -w >/dev/null || true
export PGPASSWORD=benchpw PGSSLMODE=disable
if [ ! -f $D/init ]; then
  psql -h 127.0.0.1 -p $PGP -U bench -d postgres -qc "create database app" 
  pgbench -h 127.0.0.1 -p $PGP -U bench -i -s 10 -q app >/dev/null 2>&1; touch $D/init
fi
rm -rf $D/gh; mkdir -p $D/gh
LED=""; [ -n "$DURABILITY" ] && LED="ledger:
  durability: $DURABILITY
"
cat > $D/gh/gatehouse.yaml <<Y
listen:
  postgres: "127.0.0.1:$GHP"
  http: "127.0.0.1:$HTP"
data_dir: $D/gh/data
tls:
  mode: auto
${LED}targets:
  - name: main
    engine: postgres
    environment: dev
    host: 127.0.0.1
    port: $PGP
    database: app
    user: bench
    password_env: BENCH_UPSTREAM_PASSWORD
    tls:
      mode: disable
Y
export BENCH_UPSTREAM_PASSWORD=benchpw
TOK=$($BIN --config $D/gh/gatehouse.yaml token create --name bench --kind service --ttl 2h | head -1)
PARGS=(); [ -n "$PROFILE" ] && PARGS=(--cpuprofile $PROFILE)
$BIN --config $D/gh/gatehouse.yaml --log-level warn serve "${PARGS[@]}" > $D/gh/serve.log 2>&1 &
GPID=$!
for i in $(seq 50); do PGPASSWORD=$TOK psql "host=127.0.0.1 port=$GHP user=bench dbname=main sslmode=disable" -qAtc "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
PGPASSWORD=$TOK pgbench -h 127.0.0.1 -p $GHP -U bench -c ${CLIENTS:-8} -j 2 -T 2 "$@" main >/dev/null 2>&1 || true
sleep 0.5
if [ -n "$PERF" ]; then perf record -F 2000 -g -p $GPID -o $D/perf.data -- sleep 4 >/dev/null 2>&1 & fi
if [ -n "$STRACE" ]; then strace -c -f -p $GPID -o $D/strace.txt & SPID=$!; sleep 1; fi
SC=syscalls:sys_enter_
if [ -n "$SYSCOUNT" ]; then perf stat -x, -e ${SC}read,${SC}write,${SC}futex,${SC}nanosleep,${SC}epoll_pwait,${SC}pwrite64,${SC}fdatasync,${SC}sched_yield,${SC}pread64,${SC}madvise,${SC}mmap,${SC}munmap,context-switches,page-faults -p $GPID -o $D/syscount.txt -- sleep 4 & fi
t0=$(awk '{print $14+$15}' /proc/$GPID/stat)
w0=$(awk "/^write_bytes/{print \$2}" /proc/$GPID/io)
cs() { cat /proc/$GPID/task/*/status 2>/dev/null | awk '/ctxt_switches/{n+=$2} END{print n}'; }
c0=$(cs)
OUT=$(PGPASSWORD=$TOK pgbench -h 127.0.0.1 -p $GHP -U bench -c ${CLIENTS:-8} -j 2 -T ${DURATION:-8} "$@" main 2>&1)
sleep 1.5
t1=$(awk '{print $14+$15}' /proc/$GPID/stat)
w1=$(awk "/^write_bytes/{print \$2}" /proc/$GPID/io)
c1=$(cs)
[ -n "$STRACE" ] && { kill -INT $SPID; sleep 1; head -25 $D/strace.txt; }
[ -n "$SYSCOUNT" ] && awk -F, -v tps="$(echo "$OUT" | awk '/^tps/{print $3}')" 'NF>2 && $1+0>0 {printf "  %-40s %8.3f per txn\n", $3, $1/(tps*4)}' $D/syscount.txt
N=$(echo "$OUT" | awk '/number of transactions actually processed/{print $NF}' | cut -d/ -f1)
TPS=$(echo "$OUT" | awk '/^tps/{print $3}')
LAT=$(echo "$OUT" | awk '/latency average/{print $4}')
echo "$NAME tps=$TPS txns=$N lat_ms=$LAT cpu_us_per_txn=$(echo "($t1-$t0)*10000/$N" | bc -l | cut -c1-6) wbytes_per_txn=$(( (w1-w0)/N )) cswitch_per_txn=$(echo "($c1-$c0)/$N" | bc -l | cut -c1-5)"
kill -INT $GPID; wait $GPID 2>/dev/null || true
[ -n "$KEEP" ] || runuser -u postgres -- $PGB/pg_ctl -D $D/pg stop -m fast >/dev/null
