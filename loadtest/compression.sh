#!/usr/bin/env bash
# Compression's cost and gain, side by side in one run: the same scenarios on the build-log
# corpus (loadtest/corpus, `--corpus`) against one build of `tailgate serve --memory-only`,
# with readers asking for no compression, gzip and zstd, each on a fresh server at its
# defaults: fanout 1 job x 1,000 readers at 200 lines/s (and x 100), the ci shape (300 jobs x 2 readers x
# 20 lines/s) and 2,000 idle readers; then the ratios to uncompressed, and the load average.
# Usage: loadtest/compression.sh  (env: DURATION=10s, PROCS=2, PORT=18095, OUT; WORKERS=N
# sets TOKIO_WORKER_THREADS, unset by default; BIN_DIR=dir with release `tailgate` and
# `tailgate-loadtest` skips the build; SCENARIOS="fanout fanout100 ci idle" picks scenarios).
# The load generator's own CPU (it decodes every reader's stream) is reported when GNU time
# (/usr/bin/time) is installed.
set -euo pipefail

WORKERS=${WORKERS:-}
DURATION=${DURATION:-10s}
PROCS=${PROCS:-2}
PORT=${PORT:-18095}
IDLE_READERS=${IDLE_READERS:-2000}
SECRET=bench-secret-$$-0123456789abcdef0123
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-compression.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
tg_pid=
stop() {
    if [ -n "$tg_pid" ]; then
        kill "$tg_pid" 2>/dev/null || true
        wait "$tg_pid" 2>/dev/null || true
        tg_pid=
    fi
}
trap stop EXIT INT TERM
command -v jq >/dev/null || { echo "compression.sh needs jq" >&2; exit 1; }

if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    echo "== building (release)"
    (cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
    bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
SCENARIOS=${SCENARIOS:-fanout fanout100 ci idle}
timer=
[ -x /usr/bin/time ] && timer="/usr/bin/time -f %U+%S -o"
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }

start() {
    stop
    ${WORKERS:+env TOKIO_WORKER_THREADS=$WORKERS} "$bin/tailgate" serve --listen "127.0.0.1:$PORT" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" --memory-only \
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
    local name=$1 coding=$2
    shift 2
    echo "== $name ($coding) $(uptime | sed 's/.*load/load/')"
    start
    ${timer:+$timer "$out/$name-$coding.cpu"} "$bin/tailgate-loadtest" "$@" --url "http://127.0.0.1:$PORT" --corpus "$root/loadtest/corpus" \
        --compression "$coding" --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --server-pid "$tg_pid" --procs "$PROCS" --no-progress --json "$out/$name-$coding.json" >/dev/null || true
}

for coding in off gzip zstd; do
    has fanout && lt fanout "$coding" fanout --jobs 1 --readers 1000 --rate 200 --duration "$DURATION"
    # The same with 100 readers: the load generator decodes every reader's stream (1,000x
    # the gateway's compression work), so at 1,000 it, not the gateway, sets the latency.
    has fanout100 && lt fanout100 "$coding" fanout --jobs 1 --readers 100 --rate 200 --duration "$DURATION"
    has ci && lt ci "$coding" fanout --jobs 300 --readers 2 --rate 20 --duration "$DURATION"
    has idle && lt idle "$coding" idle --jobs 1 --readers "$IDLE_READERS" --duration 5s
done
stop

get() { jq -r "$2 // 0" "$out/$1.json" 2>/dev/null || echo 0; }
ratio() { jq -rn --argjson a "$1" --argjson b "$2" 'if $b == 0 then "n/a" else ($a / $b * 1000 | round / 1000) end'; }
echo
echo "== compression on the corpus (workers ${WORKERS:-default}; JSON reports in $out; $(uptime | sed 's/.*load/load/'))"
printf '%-44s %12s %12s %12s %8s %8s\n' metric off gzip zstd gzip/off zstd/off
row() {
    local label=$1 o g z
    o=$(get "$2-off" "$3"); g=$(get "$2-gzip" "$3"); z=$(get "$2-zstd" "$3")
    printf '%-44s %12s %12s %12s %8s %8s\n' "$label" "$o" "$g" "$z" "$(ratio "$g" "$o")" "$(ratio "$z" "$o")"
}
for name in fanout fanout100 ci; do
    row "[$name] bytes on the wire per reader" "$name" '.wire_bytes_per_reader | floor'
    row "[$name] events per server CPU-second" "$name" '.server.events_per_cpu_second | floor'
    row "[$name] p50 latency (us)" "$name" '.latency_us.p50'
    row "[$name] p99 latency (us)" "$name" '.latency_us.p99'
    row "[$name] lost+dup+reordered" "$name" '(.lost + .duplicated + .reordered)'
    if [ -n "$timer" ] && has "$name"; then
        cpu() { [ -f "$out/$name-$1.cpu" ] && jq -rn "$(tail -1 "$out/$name-$1.cpu") | . * 100 | round / 100" || echo 0; }
        o=$(cpu off); g=$(cpu gzip); z=$(cpu zstd)
        printf '%-44s %12s %12s %12s %8s %8s\n' "[$name] load generator CPU-seconds" "$o" "$g" "$z" "$(ratio "$g" "$o")" "$(ratio "$z" "$o")"
    fi
done
row "[idle] server RSS per reader (bytes)" idle '.server.rss_bytes_per_reader | floor'
