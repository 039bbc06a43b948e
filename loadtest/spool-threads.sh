#!/usr/bin/env bash
# Where the spool's CPU goes, per thread: one run of a single-node scenario per MODE (spool or
# memory, in the order given) on a fresh server each, then the CPU (user / sys) and voluntary
# context switches of each of the server's threads over the run, from /proc/<pid>/task/*.
# With PSTAT=1 also `perf stat` counts per thread (syscalls, page faults, context switches);
# with PERF=1 a `perf record -g` profile per mode in $OUT (PERF_HZ samples a second, 999).
# Loopback only; bounded; stops what it starts.
# Usage: BIN_DIR=<dir with tailgate, tailgate-loadtest> loadtest/spool-threads.sh spool memory
# Knobs (env): SCEN (ci | fanout | ingest, as in scale.sh; ci), DURATION (10s), OUT (a temp
# dir), PORT (18900).
set -euo pipefail
bin=${BIN_DIR:?BIN_DIR: a directory with release builds of tailgate and tailgate-loadtest}
DURATION=${DURATION:-10s}
SCEN=${SCEN:-ci}
PORT=${PORT:-18900}
SECRET=threads-secret-$$-0123456789abcdef0123456789
out=${OUT:-$(mktemp -d /tmp/tailgate-threads.XXXXXX)}
mkdir -p "$out"
pid=
data=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "$data" ] && rm -rf "$data"
    return 0
}
trap cleanup EXIT INT TERM

# snap PID: "name-tid ticks user_ticks sys_ticks voluntary_switches" per thread.
snap() {
    for t in /proc/"$1"/task/*; do
        s=$(cat "$t/stat" 2>/dev/null) || continue
        vcs=$(awk '/^voluntary_ctxt/{print $2}' "$t/status" 2>/dev/null || echo 0)
        name=${s#*(}
        name=${name%%)*}
        rest=${s##*) }
        # shellcheck disable=SC2086
        set -- $rest
        echo "${name// /_}-${t##*/} $((${12} + ${13})) ${12} ${13} ${vcs:-0}"
    done | sort
}

case $SCEN in
ci) scenario=(--jobs 300 --readers 2 --rate 20 --line-bytes 120) ;;
fanout) scenario=(--jobs 1 --readers 1000 --rate 200) ;;
ingest) scenario=(--jobs 1 --readers 1 --rate max) ;;
*) echo "SCEN is ci, fanout or ingest" >&2; exit 2 ;;
esac
hz=$(getconf CLK_TCK)

for mode in "$@"; do
    data=$(mktemp -d /tmp/tailgate-threads-data.XXXXXX)
    case $mode in
    spool) store=(--data-dir "$data") ;;
    memory) store=(--memory-only) ;;
    *) echo "modes are spool and memory" >&2; exit 2 ;;
    esac
    "$bin/tailgate" serve --listen "127.0.0.1:$PORT" --jwt-secret "$SECRET" --jwt-issuer bench \
        --jwt-audience bench "${store[@]}" >"$out/tailgate-$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    snap "$pid" >"$out/before-$mode"
    watcher=
    if [ "${PSTAT:-0}" = 1 ]; then
        perf stat -e raw_syscalls:sys_enter,page-faults,context-switches --per-thread -p "$pid" \
            -o "$out/perf-stat-$mode.txt" &
        watcher=$!
    elif [ "${PERF:-0}" = 1 ]; then
        perf record -F ${PERF_HZ:-999} -g -p "$pid" -o "$out/perf-$mode.data" >/dev/null 2>&1 &
        watcher=$!
    fi
    timeout 240 "$bin/tailgate-loadtest" fanout "${scenario[@]}" --duration "$DURATION" \
        --url "http://127.0.0.1:$PORT" --jwt-secret "$SECRET" --jwt-issuer bench \
        --jwt-audience bench --procs 2 --no-progress --server-pid "$pid" \
        --json "$out/$mode.json" >"$out/$mode.txt" 2>&1 || true
    if [ -n "$watcher" ]; then
        kill -INT "$watcher"
        wait "$watcher" || true
    fi
    snap "$pid" >"$out/after-$mode"
    kill "$pid"
    wait "$pid" || true
    pid=
    rm -rf "$data"
    data=
    echo "== $mode ($SCEN, $DURATION): server CPU-s $(jq -r '.server.cpu_seconds' "$out/$mode.json"), events per CPU-s $(jq -r '.server.events_per_cpu_second | floor' "$out/$mode.json"), delivered $(jq -r '.delivered' "$out/$mode.json"), lost $(jq -r '.lost' "$out/$mode.json")"
    join -a2 -e0 -o auto "$out/before-$mode" "$out/after-$mode" |
        awk -v hz="$hz" '{ cpu = ($6 - $2) / hz; if (cpu >= 0.01) printf "  %-24s CPU-s %.2f (user %.2f, sys %.2f), voluntary switches %d\n", $1, cpu, ($7 - $3) / hz, ($8 - $4) / hz, $9 - $5 }'
    if [ "${PSTAT:-0}" = 1 ]; then
        grep -E 'raw_syscalls|page-faults|context-switches' "$out/perf-stat-$mode.txt" | grep -v 'not counted' |
            awk '$2 > 100 { printf "  %-24s %s %s\n", $1, $2, $3 }'
    fi
done
