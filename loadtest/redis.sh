#!/usr/bin/env bash
# Several Tailgate instances sharing jobs through one Redis, on this machine: for 1, 2 and 4
# instances, fanout runs with readers spread round-robin over the instances (the publisher on
# the first), then Redis commands per published record (INFO commandstats), delivered events
# per CPU-second summed over the instances and Redis, and p99.
# Usage: loadtest/redis.sh   (env knobs below; needs redis-server, redis-cli and jq)
set -euo pipefail

INSTANCES=${INSTANCES:-1 2 4}
# Each case: "jobs readers-per-job rate" (rate: lines/s per job).
CASES=${CASES:-"1 10 200|1 1000 200|300 2 5"}
DURATION=${DURATION:-10s}
LINE_BYTES=${LINE_BYTES:-100}
PROCS=${PROCS:-2}
BASE_PORT=${BASE_PORT:-18180}
REDIS_PORT=${REDIS_PORT:-18179}
SECRET=bench-secret-$$
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-redis-bench.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM

for tool in redis-server redis-cli jq; do
    command -v "$tool" >/dev/null || { echo "redis.sh needs $tool" >&2; exit 1; }
done

echo "== building (release)"
(cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
bin=${CARGO_TARGET_DIR:-$root/target}/release

cli() { redis-cli -p "$REDIS_PORT" "$@"; }

echo "== starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence: measures the protocol work)"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
for _ in $(seq 50); do cli ping >/dev/null 2>&1 && break; sleep 0.1; done

# Every command's calls since the last CONFIG RESETSTAT, as "name calls" lines.
calls() {
    cli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p'
}

# Commands the job script runs inside Redis are counted by INFO too; "sent/rec" leaves them
# out (what instances send), "all/rec" keeps them.
inside='^(hmget|hset|xadd|get|set|pexpire|hgetall|hget|hlen|hdel|hrandfield|config\|resetstat) '
printf '%-10s %-18s %10s %9s %9s %12s %10s %10s %10s %12s\n' instances case published \
    "sent/rec" "all/rec" "evalsha/rec" "xread/rec" "xrange/rec" "p99(us)" "ev/CPU-s"
for n in $INSTANCES; do
    tg_pids=()
    urls=()
    for i in $(seq 0 $((n - 1))); do
        port=$((BASE_PORT + i))
        "$bin/tailgate" serve --listen "127.0.0.1:$port" \
            --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
            --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --job-memory-bytes 67108864 \
            >"$work/tailgate-$n-$i.log" 2>&1 &
        pids+=($!)
        tg_pids+=($!)
        urls+=("http://127.0.0.1:$port")
        for _ in $(seq 50); do
            curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
            sleep 0.1
        done
    done
    reader_urls=()
    for u in "${urls[@]:1}"; do reader_urls+=(--reader-url "$u"); done
    server_pids=(--server-pid "$redis_pid")
    for p in "${tg_pids[@]}"; do server_pids+=(--server-pid "$p"); done

    IFS='|' read -ra cases <<<"$CASES"
    for c in "${cases[@]}"; do
        read -r jobs readers rate <<<"$c"
        name="n$n-j$jobs-r$readers"
        cli config resetstat >/dev/null
        "$bin/tailgate-loadtest" fanout --url "${urls[0]}" "${reader_urls[@]}" \
            --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
            --jobs "$jobs" --readers "$readers" --rate "$rate" --duration "$DURATION" \
            --line-bytes "$LINE_BYTES" --procs "$PROCS" --no-progress \
            "${server_pids[@]}" --json "$out/$name.json" >"$out/$name.txt" 2>&1 || true
        calls >"$out/$name.calls"
        published=$(jq -r '.published' "$out/$name.json")
        per() { awk -v want="$1" -v p="$published" '$1 == want || want == "*" { s += $2 } END { printf "%.3f", (p > 0 ? s / p : 0) }' "$out/$name.calls"; }
        sent=$(grep -Ev "$inside" "$out/$name.calls" | awk -v p="$published" '{ s += $2 } END { printf "%.3f", (p > 0 ? s / p : 0) }')
        printf '%-10s %-18s %10s %9s %9s %12s %10s %10s %10s %12s\n' "$n" "${jobs}x${readers}@${rate}" \
            "$published" "$sent" "$(per '*')" "$(per evalsha)" "$(per xread)" "$(per xrange)" \
            "$(jq -r '.latency_us.p99' "$out/$name.json")" \
            "$(jq -r '.server.events_per_cpu_second // 0 | floor' "$out/$name.json")"
        jq -r '"    lost \(.lost) duplicated \(.duplicated) reordered \(.reordered) delivered \(.delivered) of \(.expected_delivered)"' "$out/$name.json"
    done
    for p in "${tg_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    cli flushall >/dev/null
done
echo "JSON reports and per-command counts in $out"
