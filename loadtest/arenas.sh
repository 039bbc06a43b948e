#!/usr/bin/env bash
# glibc malloc arenas: what one arena (serve's default, issue 17 item 10) costs in CPU against
# two, side by side in one run on one build: `tailgate serve` with a fresh spool per scenario,
# started with MALLOC_ARENA_MAX=1 then =2 (set outside, so serve keeps it), REPEAT times:
# fanout 1 job x 1,000 readers at 200 lines/s, the ci shape (300 jobs x 2 readers x 20 lines/s),
# an ingest at --rate max (1 job x 1 reader). Prints events per server CPU-second, p99 and the
# server's RSS when publishing ended, per run, and the one / two ratio of the means.
# Usage: loadtest/arenas.sh  (env: DURATION=10s, REPEAT=2, PROCS=2, PORT=18097, OUT;
# BIN_DIR=<dir with release tailgate and tailgate-loadtest> skips the build)
set -euo pipefail

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-2}
PROCS=${PROCS:-2}
PORT=${PORT:-18097}
SECRET=bench-secret-$$-0123456789abcdef0123
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-arenas.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
tg_pid=
stop() {
    if [ -n "$tg_pid" ]; then
        kill "$tg_pid" 2>/dev/null || true
        wait "$tg_pid" 2>/dev/null || true
        tg_pid=
    fi
    rm -rf "$work/data"
}
trap 'stop; rm -rf "$work/data"' EXIT INT TERM
command -v jq >/dev/null || { echo "arenas.sh needs jq" >&2; exit 1; }

if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    echo "== building (release)"
    (cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
    bin=${CARGO_TARGET_DIR:-$root/target}/release
fi

start() {
    local arenas=$1
    stop
    mkdir -p "$work/data"
    MALLOC_ARENA_MAX=$arenas "$bin/tailgate" serve --listen "127.0.0.1:$PORT" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" --data-dir "$work/data" \
        --max-streams-per-subject 1000000 >>"$work/tailgate.log" 2>&1 &
    tg_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && return
        sleep 0.1
    done
    echo "tailgate did not start; see $work/tailgate.log" >&2
    exit 1
}

lt() {
    local name=$1 arenas=$2 run=$3
    shift 3
    echo "== $name, $arenas arena(s), run $run, $(uptime | sed 's/.*load/load/')"
    start "$arenas"
    "$bin/tailgate-loadtest" "$@" --url "http://127.0.0.1:$PORT" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --server-pid "$tg_pid" --procs "$PROCS" --no-progress \
        --json "$out/$name-$arenas-$run.json" >/dev/null || true
}

for run in $(seq "$REPEAT"); do
    for arenas in 1 2; do
        lt fanout "$arenas" "$run" fanout --jobs 1 --readers 1000 --rate 200 --duration "$DURATION"
        lt ci "$arenas" "$run" fanout --jobs 300 --readers 2 --rate 20 --duration "$DURATION"
        lt ingest "$arenas" "$run" fanout --jobs 1 --readers 1 --rate max --duration "$DURATION"
    done
done
stop

get() { jq -r "$2 // 0" "$out/$1.json" 2>/dev/null || echo 0; }
echo
echo "== malloc arenas, one vs two (JSON reports in $out; $(uptime | sed 's/.*load/load/'))"
printf '%-8s %-4s %16s %16s %10s %10s %10s %8s\n' scenario run "ev/CPU-s (1)" "ev/CPU-s (2)" "p99 ms(1)" "p99 ms(2)" "RSS MiB(1)" "(2)"
for name in fanout ci ingest; do
    s1=0 s2=0
    for run in $(seq "$REPEAT"); do
        e1=$(get "$name-1-$run" '.server.events_per_cpu_second | floor')
        e2=$(get "$name-2-$run" '.server.events_per_cpu_second | floor')
        p1=$(get "$name-1-$run" '.latency_us.p99 / 1000 | floor')
        p2=$(get "$name-2-$run" '.latency_us.p99 / 1000 | floor')
        r1=$(get "$name-1-$run" '.server.rss_bytes_after / 1048576 | floor')
        r2=$(get "$name-2-$run" '.server.rss_bytes_after / 1048576 | floor')
        printf '%-8s %-4s %16s %16s %10s %10s %10s %8s\n' "$name" "$run" "$e1" "$e2" "$p1" "$p2" "$r1" "$r2"
        s1=$((s1 + e1)) s2=$((s2 + e2))
    done
    echo "$name: one / two arenas, events per CPU-second (mean): $(jq -rn --argjson a "$s1" --argjson b "$s2" 'if $b == 0 then "n/a" else ($a / $b * 1000 | round / 1000) end')"
done
