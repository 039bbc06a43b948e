#!/usr/bin/env bash
# Issue 18's performance lines on the build-log corpus, on release builds at DEFAULT settings
# (no TOKIO_WORKER_THREADS, no raised caps; --archive-quiet-secs 2, --archive-uploads 2,
# --archive-zstd-level 3, the 1 GiB memory budget): a real SeaweedFS (`weed mini` from target/s3-venv, as .ci/run installs
# it), a real redis-server, gateway A archiving behind Redis, and gateways B and C on the same
# Redis and bucket that never saw the jobs live. loadtest/archive.py drives them (see its
# header) and prints one JSON line per part. Loopback only; everything it starts is stopped on
# exit; every wait is bounded.
# Usage: loadtest/archive.sh      Knobs (env): JOBS (300), READERS (1000), OUT (a temp dir),
# PROFILE (release; dev only to try the script), BIN_DIR (a directory holding a built
# `tailgate`: no build), PHASES (size,lag,resume,replay; resume and replay need lag),
# TG_ARGS (extra flags for every gateway, e.g. "--archive-zstd-level 3"; see
# loadtest/archive-lag.sh). Ports: free ones, picked by the kernel.
set -euo pipefail

SECRET=archive-secret-$$-0123456789abcdef0123456789
ISS=bench
AUD=bench
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/tailgate-archive.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work/s3" "$work/redis"
}
trap cleanup EXIT INT TERM

weed=${TAILGATE_WEED:-$target/s3-venv/bin/weed}
for tool in redis-server curl python3 "$weed"; do
    command -v "$tool" >/dev/null || { echo "archive.sh needs $tool" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || true

PROFILE=${PROFILE:-release}
if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    echo "== building ($PROFILE)"
    (cd "$root" && cargo build --profile "$PROFILE" -q -p tailgate)
    bin=$target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
fi
read -r -a tg_args <<<"${TG_ARGS:-}"

wait_for() {
    local what=$1
    shift
    for _ in $(seq 600); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$what did not come up (logs in $work)" >&2
    exit 1
}

# A port nothing listens on now (other load tests may run on this machine).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# SeaweedFS: every port it opens on loopback.
S3_PORT=$(free_port)
export AWS_ACCESS_KEY_ID=archive-bench AWS_SECRET_ACCESS_KEY=archive-bench-secret-0123456789
export AWS_REGION=us-east-1
mkdir -p "$work/s3" "$work/redis"
flags=()
for flag in master.port master.port.grpc volume.port volume.port.grpc filer.port \
    filer.port.grpc s3.port.grpc s3.port.iceberg s3.port.lance admin.port admin.port.grpc \
    webdav.port debug.port metricsPort; do
    flags+=("-$flag=$(free_port)")
done
"$weed" mini -dir="$work/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=$S3_PORT -bucket=logs \
    "${flags[@]}" >"$work/weed.log" 2>&1 &
pids+=($!)
cpu_pids="weed:$!"
wait_for "seaweedfs" bash -c "curl -s -o /dev/null -w '%{http_code}' -I http://127.0.0.1:$S3_PORT/logs | grep -qE '^(200|403)$'"

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$work/redis" --save "" \
    --protected-mode no >"$work/redis.log" 2>&1 &
pids+=($!)
cpu_pids+=" redis:$!"
wait_for "redis" bash -c "echo PING | timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT; cat >&3; head -c 5 <&3' | grep -q PONG"

# start_tg NAME PORT: a gateway on Redis archiving to the bucket, defaults otherwise.
start_tg() {
    "$bin/tailgate" serve --listen "127.0.0.1:$2" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" --metrics-public \
        --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
        --archive-url s3://logs/bench --archive-endpoint "http://127.0.0.1:$S3_PORT" \
        "${tg_args[@]}" >"$work/tailgate-$1.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
    cpu_pids+=" $1:$last_pid"
    wait_for "tailgate $1" curl -fs "http://127.0.0.1:$2/readyz"
}
A_PORT=$(free_port) B_PORT=$(free_port) C_PORT=$(free_port)
start_tg a "$A_PORT"
start_tg b "$B_PORT"
start_tg c "$C_PORT"
c_pid=$last_pid

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores); gateway flags: ${TG_ARGS:-defaults}"
echo "== pids: $cpu_pids"
CPU_PIDS=$cpu_pids SECRET=$SECRET ISS=$ISS AUD=$AUD python3 "$root/loadtest/archive.py" \
    "$A_PORT" "$B_PORT" "$C_PORT" "$REDIS_PORT" "$c_pid" \
    "$root/loadtest/corpus" "$out/archive.json"
if command -v zstd >/dev/null && [[ ",${PHASES:-size}," == *,size,* ]]; then
    raw=$(cat "$root"/loadtest/corpus/*.log | wc -c)
    z19=$(for f in "$root"/loadtest/corpus/*.log; do zstd -19 --long=27 -q -c "$f" | wc -c; done | paste -sd+ | bc)
    echo "{\"reference\":\"zstd -19 --long of each raw log\",\"raw_bytes\":$raw,\"bytes\":$z19,\"pct\":$(echo "scale=2; 100*$z19/$raw" | bc)}"
fi
echo "== report: $out/archive.json; logs in $work"
