#!/usr/bin/env bash
# The spool's cost: the same scenarios against one build of tailgate, once with the
# durable spool (default fsync) and once with --memory-only, then the ratios; plus how
# long recovery of JOBS_RECOVERY jobs of RECOVERY_MB_PER_JOB takes.
# Usage: loadtest/durability.sh  (env knobs below; results in $OUT)
set -euo pipefail

# Tokio worker threads; empty (the default): the gateway's default, one per core.
WORKERS=${WORKERS:-}
DURATION=${DURATION:-10s}
PROCS=${PROCS:-2}
RECOVERY_JOBS=${RECOVERY_JOBS:-1000}
RECOVERY_KB_PER_JOB=${RECOVERY_KB_PER_JOB:-1024}
PORT=${PORT:-18090}
SECRET=bench-secret-$$-0123456789abcdef0123
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-durability.XXXXXX)
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
command -v jq >/dev/null || { echo "durability.sh needs jq" >&2; exit 1; }

echo "== building (release)"
(cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
bin=${CARGO_TARGET_DIR:-$root/target}/release

# start MODE: a fresh tailgate, `spool` (a new data dir) or `memory`.
start() {
    stop
    local mode=$1 store
    if [ "$mode" = spool ]; then
        rm -rf "$work/data"
        store=(--data-dir "$work/data")
    else
        store=(--memory-only)
    fi
    env ${WORKERS:+TOKIO_WORKER_THREADS=$WORKERS} "$bin/tailgate" serve --listen "127.0.0.1:$PORT" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" "${store[@]}" \
        >>"$work/tailgate-$mode.log" 2>&1 &
    tg_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && return
        sleep 0.1
    done
    echo "tailgate did not start; see $work/tailgate-$mode.log" >&2
    exit 1
}

lt() {
    local name=$1 mode=$2
    shift 2
    echo "== $name ($mode)"
    "$bin/tailgate-loadtest" "$@" --url "http://127.0.0.1:$PORT" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --server-pid "$tg_pid" --procs "$PROCS" --no-progress --json "$out/$name-$mode.json" >/dev/null || true
}

scenarios() {
    local mode=$1
    for rate in 50 200; do
        start "$mode"
        lt "fanout-$rate" "$mode" fanout --jobs 1 --readers 1000 --rate "$rate" --duration "$DURATION"
    done
    start "$mode"
    lt many "$mode" fanout --jobs 300 --readers 2 --rate 20 --duration "$DURATION"
    start "$mode"
    lt max "$mode" fanout --jobs 1 --readers 1 --rate max --duration "$DURATION"
    start "$mode"
    lt slow "$mode" slow --jobs 1 --readers 100 --rate 1000 --duration "$DURATION" --slow-share 0.1
}
scenarios spool
scenarios memory

echo "== recovery: $RECOVERY_JOBS jobs x $RECOVERY_KB_PER_JOB KiB"
start spool
line=$(printf 'recovery line %0100d' 0)
: >"$work/body.txt"
while [ "$(stat -c %s "$work/body.txt")" -lt $((RECOVERY_KB_PER_JOB * 1024)) ]; do
    echo "$line" >>"$work/body.txt"
done
for i in $(seq "$RECOVERY_JOBS"); do
    token=$("$bin/tailgate" token mint --secret "$SECRET" --issuer "$ISS" --audience "$AUD" \
        --sub bench --job "r$i" --scope publish)
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: text/plain' \
        --data-binary @"$work/body.txt" "http://127.0.0.1:$PORT/v1/jobs/r$i/logs"
done
kill -9 "$tg_pid"
wait "$tg_pid" 2>/dev/null || true
tg_pid=
disk=$(du -sb "$work/data" | cut -f1)
env TAILGATE_LOG=info ${WORKERS:+TOKIO_WORKER_THREADS=$WORKERS} "$bin/tailgate" serve --listen "127.0.0.1:$PORT" \
    --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" --data-dir "$work/data" \
    --log-format json >"$work/recovery.log" 2>&1 &
tg_pid=$!
for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
done
recovery_ms=$(grep -m1 'recovered the spool' "$work/recovery.log" | jq -r '.fields.elapsed_ms')
stop

ratio() { jq -rn --argjson a "$1" --argjson b "$2" 'if $b == 0 then "n/a" else ($a / $b * 100 | round / 100) end'; }
get() { jq -r "$2 // 0" "$out/$1.json" 2>/dev/null || echo 0; }
echo
echo "== spool vs memory-only (workers ${WORKERS:-default}; JSON reports in $out)"
printf '%-46s %14s %14s %8s\n' metric spool memory ratio
row() {
    local label=$1 s m
    s=$(get "$2-spool" "$3")
    m=$(get "$2-memory" "$3")
    printf '%-46s %14s %14s %8s\n' "$label" "$s" "$m" "$(ratio "$s" "$m")"
}
for name in fanout-50 fanout-200 many max; do
    row "[$name] events per server CPU-second" "$name" '.server.events_per_cpu_second | floor'
    row "[$name] p99 latency (us)" "$name" '.latency_us.p99'
    row "[$name] publisher lines/s achieved" "$name" '.publish_rate | floor'
    row "[$name] lost+dup+reordered" "$name" '(.lost + .duplicated + .reordered)'
done
row "[slow] publish rate change with stalled readers (%)" slow '.slow.publish_rate_change_pct'
row "[slow] caught-up readers' p99 change (%)" slow '.slow.fast_p99_change_pct'
row "[slow] lost+dup+reordered" slow '(.lost + .duplicated + .reordered)'
echo "recovery: $RECOVERY_JOBS jobs, $disk bytes on disk, recovered in ${recovery_ms} ms"
