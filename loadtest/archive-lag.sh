#!/usr/bin/env bash
# Issue 18's lag line, setting against setting (and binary against binary) in one run: for
# each case, loadtest/archive.sh with PHASES=size,lag (fresh SeaweedFS, Redis and three
# gateways each time), so the object size and the lag of 300 jobs finishing together are
# measured back to back on the same machine. Repeat with ROUNDS; every figure is printed,
# none averaged away, with each process's CPU seconds during the lag.
# Usage: loadtest/archive-lag.sh    Knobs (env): CASES ("zstd level|uploads|quiet secs",
# separated by commas; default "9|2|2"), ROUNDS (2), BIN_DIR (release binaries; unset:
# archive.sh builds), BIN_DIRS (several directories of release binaries, separated by
# commas: each case runs with each, in that order), PHASES (size,lag), JOBS (300).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CASES=${CASES:-9|2|2}
ROUNDS=${ROUNDS:-2}
IFS=, read -r -a cases <<<"$CASES"
IFS=, read -r -a bins <<<"${BIN_DIRS:-${BIN_DIR:-}}"
for round in $(seq "$ROUNDS"); do
    for c in "${cases[@]}"; do
        for bin in "${bins[@]:-}"; do
            IFS='|' read -r level uploads quiet <<<"$c"
            echo "== round $round: ${bin:-built} --archive-zstd-level $level --archive-uploads $uploads --archive-quiet-secs $quiet"
            BIN_DIR=$bin PHASES=${PHASES:-size,lag} \
                TG_ARGS="--archive-zstd-level $level --archive-uploads $uploads --archive-quiet-secs $quiet" \
                "$root/loadtest/archive.sh" | grep -E '^\{|^== load' |
                python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("=="):
        print("  " + line.strip()); continue
    d = json.loads(line)
    if "p99_s" in d:
        print("  lag: p50 %.2f s, p99 %.2f s, max %.2f s, not archived %d (load %s -> %s)" % (
            d["p50_s"], d["p99_s"], d["max_s"], d["not_archived"], d["load_before"], d["load_after"]))
        print("  cpu s during the lag: " + ", ".join("%s %s" % kv for kv in d.get("cpu_s", {}).items()))
    elif "object_bytes" in d:
        print("  size: %d / %d B = %.2f %%" % (d["object_bytes"], d["raw_bytes"], d["pct"]))
'
        done
    done
done
