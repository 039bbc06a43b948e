#!/usr/bin/env bash
# Issue 16's performance lines, side by side in one run, on release builds at DEFAULT settings
# (no TOKIO_WORKER_THREADS, no raised caps): a single node with the spool and --memory-only,
# 2 instances on one Redis, the same through a 1 ms-each-way proxy, 3 instances on a 3-primary
# Redis Cluster, and caught-up readers while another reader reads 200 MB back from the spool.
# Loopback only; every process it starts is stopped on exit; every run is bounded in time.
# Prints a summary table and the issue's targets (PASS/FAIL). Usage: loadtest/scale.sh
# Knobs (env): DURATION (10s), PROCS (2), READBACK_MB (200), OUT (a temp dir), SKIP (names of
# parts to leave out: "single redis proxy cluster readback"), SINGLE (the single-node scenarios:
# "ci fanout ingest"), PROFILE (release), BIN_DIR (use the binaries there instead of building).
set -euo pipefail

DURATION=${DURATION:-10s}
PROCS=${PROCS:-2}
READBACK_MB=${READBACK_MB:-200}
SKIP=${SKIP:-}
SINGLE=${SINGLE:-ci fanout ingest}
BASE_PORT=${BASE_PORT:-18400}
REDIS_PORT=$((BASE_PORT + 50))
PROXY_PORT=$((BASE_PORT + 51))
CLUSTER_PORT=$((BASE_PORT + 61)) # three nodes: +61..+63, bus ports +10000
SECRET=scale-secret-$$-0123456789abcdef0123456789
ISS=bench
AUD=bench
# Per invocation of the load generator: connect + DURATION + drain, with room to spare.
RUN_TIMEOUT=${RUN_TIMEOUT:-240}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/tailgate-scale.XXXXXX)
out=${OUT:-$work}
mkdir -p "$out"
pids=()
started=$(date +%s)

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work/data" "$work"/history-*.txt
}
trap cleanup EXIT INT TERM

for tool in redis-server redis-cli jq curl timeout; do
    command -v "$tool" >/dev/null || { echo "scale.sh needs $tool" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || true

# PROFILE=dev only to try the script itself: figures of a debug build mean nothing.
PROFILE=${PROFILE:-release}
# BIN_DIR: take tailgate and tailgate-loadtest from there, unbuilt (to compare two builds).
if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    echo "== building ($PROFILE)"
    (cd "$root" && cargo build --profile "$PROFILE" -q -p tailgate -p tailgate-loadtest)
    bin=${CARGO_TARGET_DIR:-$root/target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
fi
workers=$(nproc)
thread_cap=$((workers + 16))
skip() { [[ " $SKIP " == *" $1 "* ]]; }

# wait_for WHAT CMD...: retries CMD every 0.1 s for up to 30 s.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$what did not come up (logs in $work)" >&2
    exit 1
}

# start_tg NAME PORT ARGS...: a tailgate instance at defaults plus ARGS; its pid in $last_pid.
start_tg() {
    local name=$1 port=$2
    shift 2
    "$bin/tailgate" serve --listen "127.0.0.1:$port" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" "$@" \
        >"$work/tailgate-$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
    wait_for "tailgate $name" curl -fs "http://127.0.0.1:$port/readyz"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# lt NAME SCENARIO ARGS...: one load-generator run, JSON in $out/NAME.json.
lt() {
    local name=$1
    shift
    echo "== $name"
    timeout "$RUN_TIMEOUT" "$bin/tailgate-loadtest" "$@" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --procs "$PROCS" --no-progress --json "$out/$name.json" >"$out/$name.txt" 2>&1 || true
    [ -s "$out/$name.json" ] || echo "   (no report: see $out/$name.txt)"
}

ci=(fanout --jobs 300 --readers 2 --rate 20 --line-bytes 120 --duration "$DURATION")

start_redis() { # start_redis PORT [ARGS...]: pid in $last_pid
    local port=$1
    shift
    mkdir -p "$work/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$work/redis-$port" "$@" >"$work/redis-$port.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
    wait_for "redis-server :$port" redis-cli -p "$port" ping
}

# ---- single node: spool vs --memory-only, each scenario on a fresh server
if ! skip single; then
    for mode in spool memory; do
        for s in $SINGLE; do
            if [ "$mode" = spool ]; then
                rm -rf "$work/data"
                start_tg "$mode-$s" "$BASE_PORT" --data-dir "$work/data"
            else
                start_tg "$mode-$s" "$BASE_PORT" --memory-only
            fi
            p=$last_pid
            case $s in
            ci) args=("${ci[@]}") ;;
            fanout) args=(fanout --jobs 1 --readers 1000 --rate 200 --duration "$DURATION") ;;
            ingest) args=(fanout --jobs 1 --readers 1 --rate max --duration "$DURATION") ;;
            esac
            lt "single-$s-$mode" "${args[@]}" --url "http://127.0.0.1:$BASE_PORT" --server-pid "$p"
            stop_pid "$p"
        done
    done
    rm -rf "$work/data"
fi

# ---- 2 instances on one Redis (directly, then through the delay proxy)
two_instances() { # two_instances NAME REDIS_URL
    local name=$1 url=$2 a b
    start_tg "$name-a" $((BASE_PORT + 1)) --redis-url "$url"
    a=$last_pid
    start_tg "$name-b" $((BASE_PORT + 2)) --redis-url "$url"
    b=$last_pid
    lt "$name" "${ci[@]}" --url "http://127.0.0.1:$((BASE_PORT + 1))" \
        --reader-url "http://127.0.0.1:$((BASE_PORT + 2))" \
        --server-pid "$a" --server-pid "$b" --server-pid "$redis_pid"
    stop_pid "$a"
    stop_pid "$b"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
}
if ! skip redis || ! skip proxy; then
    start_redis "$REDIS_PORT"
    redis_pid=$last_pid
    skip redis || two_instances redis "redis://127.0.0.1:$REDIS_PORT/0"
    if ! skip proxy; then
        "$bin/tailgate-delay-proxy" --listen "127.0.0.1:$PROXY_PORT" \
            --upstream "127.0.0.1:$REDIS_PORT" --delay-ms 1 >"$work/proxy.log" 2>&1 &
        proxy_pid=$!
        pids+=("$proxy_pid")
        wait_for "delay proxy" redis-cli -p "$PROXY_PORT" ping
        # The proxy's own CPU is not counted: it stands for the network.
        two_instances proxy "redis://127.0.0.1:$PROXY_PORT/0"
        stop_pid "$proxy_pid"
    fi
    stop_pid "$redis_pid"
fi

# ---- 3 instances on a 3-primary Redis Cluster
cluster_total() { # commands processed so far, all nodes
    local sum=0 n
    for i in 0 1 2; do
        n=$(redis-cli -p $((CLUSTER_PORT + i)) info stats | tr -d '\r' |
            sed -n 's/^total_commands_processed:\([0-9]*\)/\1/p')
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}
cluster_calls() { # "<command> <calls so far>" per command, summed over all nodes
    for i in 0 1 2; do redis-cli -p $((CLUSTER_PORT + i)) info commandstats; done | tr -d '\r' |
        sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' |
        awk '{ c[$1] += $2 } END { for (k in c) print k, c[k] }' | sort
}
if ! skip cluster; then
    nodes=()
    cluster_pids=()
    for i in 0 1 2; do
        start_redis $((CLUSTER_PORT + i)) --cluster-enabled yes \
            --cluster-config-file "$work/redis-$((CLUSTER_PORT + i))/nodes.conf" \
            --cluster-announce-ip 127.0.0.1 --cluster-node-timeout 2000
        cluster_pids+=("$last_pid")
        nodes+=("127.0.0.1:$((CLUSTER_PORT + i))")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        >"$work/cluster-create.log" 2>&1
    for i in 0 1 2; do
        wait_for "cluster state ok" sh -c \
            "redis-cli -p $((CLUSTER_PORT + i)) cluster info | grep -q cluster_state:ok"
    done
    tg=()
    spids=()
    for i in 0 1 2; do
        start_tg "cluster-$i" $((BASE_PORT + 10 + i)) \
            --redis-url "redis+cluster://127.0.0.1:$CLUSTER_PORT"
        tg+=("$last_pid")
        spids+=(--server-pid "$last_pid")
    done
    for p in "${cluster_pids[@]}"; do spids+=(--server-pid "$p"); done
    urls=(--url "http://127.0.0.1:$((BASE_PORT + 10))"
        --reader-url "http://127.0.0.1:$((BASE_PORT + 11))"
        --reader-url "http://127.0.0.1:$((BASE_PORT + 12))")
    # Publishing: commands per record.
    c0=$(cluster_total)
    lt cluster fanout --jobs 3000 --readers 1 --rate 2 --line-bytes 120 --duration "$DURATION" \
        "${urls[@]}" "${spids[@]}"
    c1=$(cluster_total)
    echo "$((c1 - c0))" >"$out/cluster.commands"
    # Idle: 3,000 followed jobs, nothing published (polling would be ~30,000 commands/s).
    # Each second: the commands of all nodes (a line "<seconds since the start> <per
    # second since the last line>" in cluster-idle.rates) and each command's calls (cluster-idle.calls.<n>), so the
    # report gives the quietest and the busiest second of the idle window, and what the
    # busiest one was made of.
    echo "== cluster-idle"
    timeout "$RUN_TIMEOUT" "$bin/tailgate-loadtest" idle --jobs 3000 --readers 1 \
        --duration "$DURATION" "${urls[@]}" "${spids[@]}" \
        --jwt-secret "$SECRET" --jwt-issuer "$ISS" --jwt-audience "$AUD" \
        --procs "$PROCS" --no-progress --json "$out/cluster-idle.json" \
        >"$out/cluster-idle.txt" 2>&1 &
    idle_pid=$!
    idle_start=$(date +%s.%N)
    prev=$(cluster_total)
    cluster_calls >"$out/cluster-idle.calls.0"
    : >"$out/cluster-idle.rates"
    n=0
    prev_t=$idle_start
    while kill -0 "$idle_pid" 2>/dev/null; do
        sleep 1
        n=$((n + 1))
        now=$(cluster_total)
        t=$(date +%s.%N)
        cluster_calls >"$out/cluster-idle.calls.$n"
        # A sample takes a little over a second (the redis-cli calls): per second.
        awk -v t="$t" -v p="$prev_t" -v s="$idle_start" -v d="$((now - prev))" \
            'BEGIN { printf "%.1f %d\n", t - s, d / (t - p) }' >>"$out/cluster-idle.rates"
        prev=$now
        prev_t=$t
    done
    wait "$idle_pid" || true
    for p in "${tg[@]}" "${cluster_pids[@]}"; do stop_pid "$p"; done
fi

# ---- caught-up readers while another reader reads READBACK_MB back from the spool
if ! skip readback; then
    rm -rf "$work/data"
    start_tg readback "$BASE_PORT" --data-dir "$work/data"
    p=$last_pid
    line=$(printf 'history %01000d' 0)
    # `yes` ends on SIGPIPE once `head` has its lines: not a failure.
    yes "$line" | head -n $((READBACK_MB * 1024 * 1024 / 1009)) >"$work/history-0.txt" || true
    rid=rb$$
    # prefill JOB: the history, unfinished; prints its last seq.
    prefill() {
        local token
        token=$("$bin/tailgate" token mint --secret "$SECRET" --issuer "$ISS" --audience "$AUD" \
            --sub scale-prefill --job "$1" --scope publish)
        curl -fsS -X POST -T "$work/history-0.txt" -H "Authorization: Bearer $token" \
            -H 'Content-Type: text/plain' "http://127.0.0.1:$BASE_PORT/v1/jobs/$1/logs" |
            jq -r '.last_seq'
    }
    shape=(fanout --jobs 1 --readers 100 --rate 100 --line-bytes 120 --duration "$DURATION"
        --url "http://127.0.0.1:$BASE_PORT" --server-pid "$p")
    echo "== readback: prefilling two jobs with $READBACK_MB MB each"
    base_seq=$(prefill "${rid}b-fanout-0") || base_seq=
    load_seq=$(prefill "${rid}l-fanout-0") || load_seq=
    if ! [[ "$base_seq" =~ ^[0-9]+$ && "$load_seq" =~ ^[0-9]+$ ]]; then
        echo "   prefill failed (see $work/tailgate-readback.log): read-back part left out"
        SKIP="$SKIP readback-run"
    fi
fi
if ! skip readback && ! skip readback-run; then
    lt readback-baseline "${shape[@]}" --run-id "${rid}b" --start-after "$base_seq"
    # The same, while three readers of the same job read it from seq 1 (the history from the
    # spool, then live to the end), starting 2, 5 and 8 s in.
    read_token=$("$bin/tailgate" token mint --secret "$SECRET" --issuer "$ISS" --audience "$AUD" \
        --sub scale-history --job "${rid}l-fanout-0")
    : >"$out/readback.bytes"
    for delay in 2 5 8; do
        (
            sleep "$delay"
            curl -sN -o /dev/null -w '%{size_download}\n' --max-time $((RUN_TIMEOUT - 10)) \
                -H "Authorization: Bearer $read_token" \
                "http://127.0.0.1:$BASE_PORT/v1/jobs/${rid}l-fanout-0/logs" >>"$out/readback.bytes"
        ) &
        pids+=($!)
    done
    lt readback-loaded "${shape[@]}" --run-id "${rid}l" --start-after "$load_seq"
    wait "${pids[@]: -3}" 2>/dev/null || true
    stop_pid "$p"
fi

# ---- summary
get() { jq -r "$2" "$out/$1.json" 2>/dev/null || echo "-"; }
num() { jq -rn --argjson v "${1:-0}" "$2" 2>/dev/null || echo "-"; }
echo
echo "== summary ($PROFILE build, default settings, $workers cores; JSON reports in $out)"
printf '%-26s %10s %10s %12s %14s %16s\n' run p99_ms p50_ms events/CPU-s peak_threads lost/dup/reord
row() {
    local name=$1
    [ -s "$out/$name.json" ] || { printf '%-26s %10s\n' "$name" "(not run)"; return; }
    printf '%-26s %10s %10s %12s %14s %16s\n' "$name" \
        "$(get "$name" '.latency_us.p99 / 1000 * 10 | round / 10')" \
        "$(get "$name" '.latency_us.p50 / 1000 * 10 | round / 10')" \
        "$(get "$name" '.server.events_per_cpu_second // 0 | floor')" \
        "$(get "$name" '.server.peak_threads // [] | map(tostring) | join("/")')" \
        "$(get "$name" '"\(.lost)/\(.duplicated)/\(.reordered)"')"
}
for r in single-ci-spool single-ci-memory single-fanout-spool single-fanout-memory \
    single-ingest-spool single-ingest-memory redis proxy cluster cluster-idle \
    readback-baseline readback-loaded; do
    row "$r"
done
echo "(peak_threads: per instance, then Redis; events/CPU-s counts every instance and Redis)"

verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
check() { # check LABEL VALUE JQ-CONDITION-ON-v
    local ok
    ok=$(jq -rn --argjson v "${2:-null}" "if \$v == null then 0 elif ($3) then 1 else 0 end" 2>/dev/null || echo 0)
    printf '%-72s %-14s %s\n' "$1" "$2" "$(verdict "$ok")"
}
clean() { get "$1" '.lost + .duplicated + .reordered + (if .expected_delivered and .delivered < .expected_delivered then 1 else 0 end)'; }
ratio() { jq -rn --argjson a "$1" --argjson b "$2" 'if $b == 0 then null else ($a / $b * 100 | round / 100) end' 2>/dev/null || echo null; }
eps() { get "$1" '.server.events_per_cpu_second // 0'; }
# Events per CPU-second of the gateway instances alone (every --server-pid but the last: Redis).
eps_gw() { get "$1" '.delivered / (.server.cpu_seconds_each[0:-1] | add) | floor'; }
maxthreads() { get "$1" "(.server.peak_threads // [])[0:$2] | max"; }
echo
echo "== issue 16 targets"
if [ -s "$out/redis.json" ]; then
    check "2 instances on Redis, ci shape: p99 <= 100 ms (ms)" "$(get redis '.latency_us.p99 / 1000')" '$v <= 100'
    check "  events per CPU-s, 2 instances + Redis >= 0.5x one spool instance (ratio)" \
        "$(ratio "$(eps redis)" "$(eps single-ci-spool)")" '$v >= 0.5'
    echo "    (instances only, Redis not counted: $(eps_gw redis) events per CPU-s =" \
        "$(ratio "$(eps_gw redis)" "$(eps single-ci-spool)")x; CPU-s A / B / Redis: $(get redis '.server.cpu_seconds_each | map(. * 100 | round / 100 | tostring) | join(" / ")'))"
    check "  peak threads per instance <= workers + 16 = $thread_cap" "$(maxthreads redis 2)" "\$v <= $thread_cap"
    check "  lost + doubled + reordered (+1 if short) = 0" "$(clean redis)" '$v == 0'
fi
if [ -s "$out/proxy.json" ]; then
    check "through the 1 ms proxy: p99 <= 150 ms (ms)" "$(get proxy '.latency_us.p99 / 1000')" '$v <= 150'
    check "  lost + doubled + reordered = 0" "$(clean proxy)" '$v == 0'
    check "  peak threads per instance <= $thread_cap" "$(maxthreads proxy 2)" "\$v <= $thread_cap"
fi
if [ -s "$out/cluster.json" ]; then
    published=$(get cluster '.published')
    secs=$(get cluster '.duration_secs')
    cmds=$(cat "$out/cluster.commands")
    check "Cluster, 3 instances, 3,000 jobs x 1 reader x 2 lines/s: lost+dup+reord = 0" "$(clean cluster)" '$v == 0'
    check "  Redis commands per record while publishing" "$(num "$cmds" "$cmds / ($published + 0.001) * 100 | round / 100")" '$v < 10'
    # The idle window: the seconds from 1 s after the readers were all connected to the
    # end of the idle duration in which no request reached a job (no HGETALL: every
    # request loads its job, which reads the Capgo hash; a note or a lifecycle end does
    # not). That leaves out the uploads still opening after the readers and the closing
    # line and status per job, and keeps whatever the instances do on their own.
    connect=$(get cluster-idle '.connect_phase_secs // 0')
    idle_secs=$(get cluster-idle '.duration_secs // 0')
    calls_of() { awk -v c="$1" '$1 == c { print $2 }' "$2" 2>/dev/null; }
    rows=$(n=0; while read -r t rate; do
        n=$((n + 1))
        h1=$(calls_of hgetall "$out/cluster-idle.calls.$n")
        h0=$(calls_of hgetall "$out/cluster-idle.calls.$((n - 1))")
        echo "$n $t $rate $((${h1:-0} - ${h0:-0}))"
    done <"$out/cluster-idle.rates")
    window=$(echo "$rows" | awk -v c="$connect" -v d="${DURATION%s}" \
        'NF && $2 >= c + 2 && $2 <= c + d + 0.5 && $4 == 0 { print $1, $3 }')
    echo "    (idle window: $(echo "$window" | awk 'NF' | wc -l) s without a request)"
    idle_min=$(echo "$window" | awk 'NF { print $2 }' | sort -n | head -1)
    idle_peak=$(echo "$window" | awk 'NF { print $2 }' | sort -n | tail -1)
    check "  lowest commands/s while 3,000 followed jobs idle (polling: ~30,000)" "${idle_min:-null}" '$v < 300'
    check "  peak commands/s while 3,000 followed jobs idle" "${idle_peak:-null}" '$v < 3000'
    peak_n=$(echo "$window" | awk 'NF' | sort -k2 -n | tail -1 | cut -d' ' -f1)
    if [ -n "$peak_n" ] && [ -s "$out/cluster-idle.calls.$peak_n" ]; then
        echo "    (the peak second's commands: $(join -a 2 -e 0 -o 0,1.2,2.2 "$out/cluster-idle.calls.$((peak_n - 1))" \
            "$out/cluster-idle.calls.$peak_n" | awk '$3 > $2 { print $3 - $2, $1 }' | sort -rn |
            head -6 | awk '{ printf "%s %s, ", $2, $1 }'))"
    fi
    echo "    (publishing: $cmds commands over $secs s for $published records; idle run" \
        "(connected after ${connect} s, $idle_secs s in all), per second since its start:" \
        "$(awk '{ printf "%s:%s ", $1, $2 }' "$out/cluster-idle.rates" 2>/dev/null))"
    check "  peak threads per instance <= $thread_cap" "$(maxthreads cluster 3)" "\$v <= $thread_cap"
fi
if [ -s "$out/single-ci-spool.json" ] && [ -s "$out/single-ci-memory.json" ]; then
    check "single node, ci shape: spool >= 0.9x --memory-only (events/CPU-s ratio)" \
        "$(ratio "$(eps single-ci-spool)" "$(eps single-ci-memory)")" '$v >= 0.9'
    for s in fanout ingest; do
        echo "    $s: spool/memory events per CPU-s $(ratio "$(eps "single-$s-spool")" "$(eps "single-$s-memory")"), publish rate $(get "single-$s-spool" '.publish_rate | floor') / $(get "single-$s-memory" '.publish_rate | floor') lines/s"
    done
fi
if [ -s "$out/readback-loaded.json" ]; then
    b=$(get readback-baseline '.latency_us.p99 / 1000')
    l=$(get readback-loaded '.latency_us.p99 / 1000')
    check "caught-up readers' p99 while $READBACK_MB MB is read back: loaded / baseline" "$(ratio "$l" "$b")" '$v <= 1.5'
    echo "    (p99 $b ms without, $l ms with; history readers got $(tr '\n' ' ' <"$out/readback.bytes") bytes)"
    check "  lost + doubled + reordered = 0" "$(clean readback-loaded)" '$v == 0'
fi
echo "finished in $(($(date +%s) - started)) s"
