#!/usr/bin/env bash
# Side by side: the same fanout and idle scenarios against Tailgate and Nchan (nginx), both
# on loopback with equal settings, then the ratios. Usage: loadtest/bench.sh  (env knobs below)
#
# "Equal settings": one event loop each (nginx `worker_processes 1`, `master_process off`;
# tailgate with TOKIO_WORKER_THREADS=1), both hold the whole run's messages in memory (nchan's
# message buffer sized for the run; tailgate's ring), no access log, same loopback, same
# loadtest flags. WORKERS=2 gives both two.
set -euo pipefail

WORKERS=${WORKERS:-1}
FANOUT_READERS=${FANOUT_READERS:-1000}
# Offered loads (lines/s into the one job); each runs against both servers.
RATES=${RATES:-${RATE:-50 100 200}}
DURATION=${DURATION:-10s}
LINE_BYTES=${LINE_BYTES:-100}
IDLE_READERS=${IDLE_READERS:-10000}
IDLE_DURATION=${IDLE_DURATION:-5s}
PROCS=${PROCS:-2}
TG_PORT=${TG_PORT:-18080}
NCHAN_PORT=${NCHAN_PORT:-18081}
SECRET=bench-secret-$$-0123456789abcdef0123456789
ISS=bench
AUD=bench

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-bench.XXXXXX)
out=${OUT:-$work}
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

nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null || [ ! -f "$nchan_module" ]; then
    echo "== installing nginx and Debian's libnginx-mod-nchan"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-nchan >/dev/null
fi
command -v jq >/dev/null || { echo "bench.sh needs jq" >&2; exit 1; }

echo "== building (release)"
(cd "$root" && cargo build --release -q -p tailgate -p tailgate-loadtest)
bin=${CARGO_TARGET_DIR:-$root/target}/release

mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<CONF
load_module $nchan_module;
daemon off;
master_process off;
worker_processes $WORKERS;
worker_rlimit_nofile 65536;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 30000; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/body;
    nchan_max_reserved_memory 1024M;
    server {
        listen 127.0.0.1:$NCHAN_PORT;
        location ~ ^/pub/([A-Za-z0-9._-]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 2000000;
            nchan_message_timeout 10m;
        }
        location ~ ^/sub/([A-Za-z0-9._-]+)\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message oldest;
        }
    }
}
CONF
if [ "$WORKERS" != 1 ]; then
    # master_process off runs a single process; more workers need the master.
    sed -i 's/^master_process off;/master_process on;/' "$work/nginx.conf"
fi

echo "== starting nchan (nginx) on 127.0.0.1:$NCHAN_PORT"
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
nginx_pid=$!
echo "== starting tailgate on 127.0.0.1:$TG_PORT"
TOKIO_WORKER_THREADS=$WORKERS "$bin/tailgate" serve --listen "127.0.0.1:$TG_PORT" \
    --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
    --max-streams-per-subject 1000000 \
    --memory-only --job-memory-bytes 67108864 >"$work/logs/tailgate.log" 2>&1 &
pids+=($!)
tg_pid=$!

for _ in $(seq 50); do
    if curl -fs "http://127.0.0.1:$TG_PORT/healthz" >/dev/null &&
        curl -s -o /dev/null "http://127.0.0.1:$NCHAN_PORT/pub/probe"; then
        break
    fi
    sleep 0.2
done
if [ "$WORKERS" != 1 ]; then
    # The work happens in nginx's worker; account for the first one.
    nginx_pid=$(pgrep -P "$nginx_pid" | head -1)
fi

lt() {
    local name=$1 target=$2 port=$3 pid=$4
    shift 4
    echo "== $name against $target"
    "$bin/tailgate-loadtest" "$@" --target "$target" --url "http://127.0.0.1:$port" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --server-pid "$pid" --procs "$PROCS" --json "$out/$name-$target.json" || true
}

idle=(idle --jobs 1 --readers "$IDLE_READERS" --duration "$IDLE_DURATION")
for rate in $RATES; do
    fanout=(fanout --jobs 1 --readers "$FANOUT_READERS" --rate "$rate" --duration "$DURATION" --line-bytes "$LINE_BYTES")
    lt "fanout-$rate" tailgate "$TG_PORT" "$tg_pid" "${fanout[@]}"
    lt "fanout-$rate" nchan "$NCHAN_PORT" "$nginx_pid" "${fanout[@]}"
done
lt idle tailgate "$TG_PORT" "$tg_pid" "${idle[@]}"
lt idle nchan "$NCHAN_PORT" "$nginx_pid" "${idle[@]}"

ratio() { jq -rn --argjson a "$1" --argjson b "$2" 'if $b == 0 then "n/a" else ($a / $b * 100 | round / 100) end'; }
get() { jq -r "$2 // 0" "$out/$1.json" 2>/dev/null || echo 0; }

echo
echo "== tailgate vs nchan (workers $WORKERS; JSON reports in $out)"
printf '%-40s %16s %16s %8s\n' metric tailgate nchan ratio
row() {
    local label=$1 t n
    t=$(get "$2-tailgate" "$3")
    n=$(get "$2-nchan" "$3")
    printf '%-40s %16s %16s %8s\n' "$label" "$t" "$n" "$(ratio "$t" "$n")"
}
for rate in $RATES; do
    row "[$rate/s] events per server CPU-second" "fanout-$rate" '.server.events_per_cpu_second | floor'
    row "[$rate/s] p99 latency (us)" "fanout-$rate" '.latency_us.p99'
    row "[$rate/s] p50 latency (us)" "fanout-$rate" '.latency_us.p50'
    row "[$rate/s] delivered events/s" "fanout-$rate" '.events_per_sec | floor'
    row "[$rate/s] publisher lines/s achieved" "fanout-$rate" '.publish_rate | floor'
    row "[$rate/s] lost+dup+reordered" "fanout-$rate" '(.lost + .duplicated + .reordered)'
done
row "idle RSS per reader (bytes)" idle '.server.rss_bytes_per_reader | floor'
row "idle lost+dup+reordered" idle '(.lost + .duplicated + .reordered)'
echo "ratio = tailgate / nchan: want >= 2 for events per CPU-second, <= 1 for latency and RSS."
echo "Latency runs from each line's scheduled send time, so a server that cannot take the"
echo "offered rate shows its backlog as latency; check 'publisher lines/s achieved' too."
