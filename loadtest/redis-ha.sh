#!/usr/bin/env bash
# Redis beyond one server, on this machine:
#   cluster: a 3-primary Redis Cluster, 3 Tailgate instances, JOBS jobs x 1 reader at 2 lines/s
#            (readers spread over the instances), then the same jobs idle: Redis commands per
#            second summed over the nodes (INFO commandstats, sampled every second) with records
#            flowing and with every job followed but idle.
#   wait:    a primary with one replica, one instance, the same fanout cases with and without
#            --redis-wait-replicas 1, side by side: what WAIT costs.
# Usage: loadtest/redis-ha.sh [cluster|wait]...   (default both; needs redis-server, redis-cli, jq)
# Env: JOBS (3000), DURATION (10s), WAIT_CASES ("jobs readers rate|..."), PROCS (2).
set -euo pipefail

PARTS=${*:-cluster wait}
JOBS=${JOBS:-3000}
DURATION=${DURATION:-10s}
WAIT_CASES=${WAIT_CASES:-"300 2 20|1 10 200"}
PROCS=${PROCS:-2}
BASE_PORT=${BASE_PORT:-18280}
REDIS_PORT=${REDIS_PORT:-18270}
SECRET=bench-secret-0123456789-0123456789-$$
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-redis-ha.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for tool in redis-server redis-cli jq curl; do
    command -v "$tool" >/dev/null || { echo "redis-ha.sh needs $tool" >&2; exit 1; }
done

echo "== building (release)"
(cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
bin=${CARGO_TARGET_DIR:-$root/target}/release
auth=(--jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD")

# Starts redis-server on $1 with the rest as flags; its pid in $redis_started.
start_redis() {
    local port=$1
    shift
    mkdir -p "$work/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$work/redis-$port" "$@" >"$work/redis-$port.log" 2>&1 &
    pids+=($!)
    redis_started=$!
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server on $port did not start" >&2
    exit 1
}

# Starts an instance on $1 with the rest as flags; its pid in $tg_started.
start_tailgate() {
    local port=$1
    shift
    "$bin/tailgate" serve --listen "127.0.0.1:$port" "${auth[@]}" \
        --job-memory-bytes 67108864 --max-streams-per-subject 100000 "$@" \
        >"$work/tailgate-$port.log" 2>&1 &
    pids+=($!)
    tg_started=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && return
        sleep 0.1
    done
    echo "tailgate on $port never became ready" >&2
    exit 1
}

# Every command the nodes on the given ports served since their last RESETSTAT, summed.
total_calls() {
    for port in "$@"; do redis-cli -p "$port" info commandstats; done | tr -d '\r' |
        sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}
# Calls of one command ($1) summed over the ports after it.
calls_of() {
    local cmd=$1
    shift
    for port in "$@"; do redis-cli -p "$port" info commandstats; done | tr -d '\r' |
        sed -n "s/^cmdstat_$cmd:calls=\([0-9]*\),.*/\1/p" | awk '{ s += $1 } END { print s + 0 }'
}
# Samples total_calls every second into $1 until the pid $2 exits (lines: "t calls/s").
sample_rate() {
    local file=$1 pid=$2
    shift 2
    local before now t=0
    before=$(total_calls "$@")
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        t=$((t + 1))
        now=$(total_calls "$@")
        echo "$t $((now - before))" >>"$file"
        before=$now
    done
}

cluster() {
    echo "== cluster: 3 primaries, 3 instances, $JOBS jobs x 1 reader @ 2 lines/s"
    local ports=() bus server_pids=()
    for i in 0 1 2; do
        local port=$((REDIS_PORT + i))
        bus=$((REDIS_PORT + 100 + i))
        start_redis "$port" --cluster-enabled yes --cluster-port "$bus" \
            --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000
        ports+=("$port")
        server_pids+=(--server-pid "$redis_started")
    done
    redis-cli -p "${ports[0]}" cluster addslotsrange 0 5460 >/dev/null
    redis-cli -p "${ports[1]}" cluster addslotsrange 5461 10922 >/dev/null
    redis-cli -p "${ports[2]}" cluster addslotsrange 10923 16383 >/dev/null
    for i in 1 2; do
        redis-cli -p "${ports[0]}" cluster meet 127.0.0.1 "${ports[$i]}" $((REDIS_PORT + 100 + i)) >/dev/null
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 200); do
            redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break
            sleep 0.1
        done
    done
    local urls=()
    for i in 0 1 2; do
        start_tailgate $((BASE_PORT + i)) --redis-url "redis+cluster://127.0.0.1:${ports[0]}"
        urls+=("http://127.0.0.1:$((BASE_PORT + i))")
        server_pids+=(--server-pid "$tg_started")
    done
    for port in "${ports[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done

    for scenario in fanout idle; do
        "$bin/tailgate-loadtest" "$scenario" --url "${urls[0]}" --reader-url "${urls[1]}" \
            --reader-url "${urls[2]}" "${auth[@]}" --jobs "$JOBS" --readers 1 --rate 2 \
            --line-bytes 120 --duration "$DURATION" --procs "$PROCS" --no-progress \
            "${server_pids[@]}" --json "$out/cluster-$scenario.json" \
            >"$out/cluster-$scenario.txt" 2>&1 &
        local lt=$!
        sample_rate "$out/cluster-$scenario.rate" "$lt" "${ports[@]}" &
        local sampler=$!
        wait "$lt" || true
        wait "$sampler" || true
        local published xreads
        published=$(jq -r '.published' "$out/cluster-$scenario.json")
        xreads=$(calls_of xread "${ports[@]}")
        echo "-- $scenario: published $published, lost $(jq -r .lost "$out/cluster-$scenario.json")," \
            "duplicated $(jq -r .duplicated "$out/cluster-$scenario.json")," \
            "reordered $(jq -r .reordered "$out/cluster-$scenario.json")," \
            "p99 $(jq -r .latency_us.p99 "$out/cluster-$scenario.json") us, XREADs so far $xreads"
        echo "   commands/s, second by second (all nodes): $(awk '{ printf "%s ", $2 }' "$out/cluster-$scenario.rate")"
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

wait_cost() {
    echo "== wait: a primary and a replica, one instance; --redis-wait-replicas 0 vs 1"
    start_redis "$REDIS_PORT"
    local primary_pid=$redis_started
    start_redis $((REDIS_PORT + 1)) --replicaof 127.0.0.1 "$REDIS_PORT"
    for _ in $(seq 100); do
        redis-cli -p $((REDIS_PORT + 1)) info replication | grep -q master_link_status:up && break
        sleep 0.1
    done
    printf '%-6s %-14s %10s %6s %10s %10s %12s %12s\n' wait case published lost p50_us p99_us ev/CPU-s publish/s
    IFS='|' read -ra cases <<<"$WAIT_CASES"
    for c in "${cases[@]}"; do
        read -r jobs readers rate <<<"$c"
        for w in 0 1; do
            start_tailgate "$BASE_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
                --redis-wait-replicas "$w"
            local tg=$tg_started name="wait$w-j$jobs-r$readers"
            "$bin/tailgate-loadtest" fanout --url "http://127.0.0.1:$BASE_PORT" "${auth[@]}" \
                --jobs "$jobs" --readers "$readers" --rate "$rate" --line-bytes 120 \
                --duration "$DURATION" --procs "$PROCS" --no-progress \
                --server-pid "$tg" --server-pid "$primary_pid" \
                --json "$out/$name.json" >"$out/$name.txt" 2>&1 || true
            printf '%-6s %-14s %10s %6s %10s %10s %12s %12s\n' "$w" "${jobs}x${readers}@${rate}" \
                "$(jq -r .published "$out/$name.json")" "$(jq -r .lost "$out/$name.json")" \
                "$(jq -r .latency_us.p50 "$out/$name.json")" "$(jq -r .latency_us.p99 "$out/$name.json")" \
                "$(jq -r '.server.events_per_cpu_second // 0 | floor' "$out/$name.json")" \
                "$(jq -r '.publish_rate // 0' "$out/$name.json")"
            kill "$tg" 2>/dev/null || true
            wait "$tg" 2>/dev/null || true
            redis-cli -p "$REDIS_PORT" flushall >/dev/null
        done
    done
}

for part in $PARTS; do
    case $part in
    cluster) cluster ;;
    wait) wait_cost ;;
    *) echo "unknown part $part (cluster, wait)" >&2; exit 2 ;;
    esac
done
echo "JSON reports, outputs and per-second command rates in $out"
