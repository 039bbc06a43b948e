#!/usr/bin/env bash
# Bytes on the wire per reader on the corpus, side by side in one run: for each log of this
# folder, one job is published live (its lines fed at RATE lines/s through one chunked upload)
# while three readers follow it from the start: uncompressed, gzip and zstd (curl
# --compressed, which decodes; `size_download` is the body without the HTTP chunk framing),
# and a raw-socket reader per coding (rawread.py) counts what the socket carried: headers,
# chunk framing and body. Each reader's decoded stream is compared byte for byte with the
# uncompressed one. KEEP=DIR keeps the bodies (for ideal.py: what zlib would do with them).
# With node and Node's `ws` (WS_MODULES, default target/sse-clients, as .ci/run installs it),
# two Capgo WebSocket readers follow too, without and with permessage-deflate, and their
# socket bytes are reported.
# Usage: loadtest/corpus/wire.sh   (env: RATE=5000, BIN=target/release/tailgate, PORT=18090,
#   CORPUS=this folder, KEEP=)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RATE=${RATE:-5000}
PORT=${PORT:-18090}
BIN=${BIN:-$root/target/release/tailgate}
[ -x "$BIN" ] || (cd "$root" && cargo build --release -q -p tailgate)
SECRET=wire-secret-$$-0123456789abcdef0123456789
work=$(mktemp -d /tmp/tailgate-wire.XXXXXX)
"$BIN" serve --listen 127.0.0.1:$PORT --jwt-secret "$SECRET" --jwt-issuer wire \
  --jwt-audience wire --memory-only >"$work/gateway.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; wait $gw 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
WS_MODULES=${WS_MODULES:-$root/target/sse-clients}
ws_client="$root/tests/sse-clients/capgo_ws.mjs"
capgo=0
[ -d "$WS_MODULES/node_modules/ws" ] && command -v node >/dev/null && capgo=1
ws_bytes() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "summary" in v: print(v["summary"]["bytes_read"] or 0); break
else: print(0)' "$1"; }
mint() { "$BIN" token mint --secret "$SECRET" --issuer wire --audience wire --sub wire --job "$1" ${2:+--scope "$2"}; }
feed() { python3 -c '
import sys, time
rate = float(sys.argv[1]); t = time.monotonic(); n = 0
with open(sys.argv[2], "rb") as f:
    for line in f:
        sys.stdout.buffer.write(line); n += 1
        if n % 50 == 0:
            sys.stdout.flush(); t += 50 / rate
            d = t - time.monotonic()
            if d > 0: time.sleep(d)
sys.stdout.flush()' "$RATE" "$1"; }

printf '%-12s %10s %10s %10s %10s %8s %8s %9s %9s %9s\n' log raw_bytes sse_bytes gzip_bytes zstd_bytes gzip_% zstd_% \
  sock_sse% sock_gz% sock_zs%
tot_sse=0; tot_gz=0; tot_zs=0; tot_raw=0; tot_sid=0; tot_sgz=0; tot_szs=0; tot_wp=0; tot_wd=0; ws_lines=()
sock() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["socket_bytes"])' "$1"; }
for log in "${CORPUS:-$here}"/*.log; do
  name=$(basename "$log" .log)
  job="wire-$name-$$"
  read_tok=$(mint "$job"); pub_tok=$(mint "$job" publish)
  url="http://127.0.0.1:$PORT/v1/jobs/$job/logs"
  for c in identity gzip zstd; do
    curl -sS -N --compressed -H "accept-encoding: $c" -H "authorization: Bearer $read_tok" \
      -o "$work/$name.$c" -w '%{size_download}' "$url" >"$work/$name.$c.size" &
  done
  for c in identity gzip zstd; do
    python3 "$here/rawread.py" "$url" "$read_tok" "$c" "$work/$name.raw-$c" >"$work/$name.raw-$c.json" &
  done
  if [ $capgo = 1 ]; then
    for m in plain deflate; do
      node "$ws_client" "$WS_MODULES" "ws://127.0.0.1:$PORT/build_logs_direct/$job/stream?token=$read_tok" $m \
        >"$work/$name.ws-$m" 2>/dev/null &
    done
  fi
  sleep 0.5
  feed "$log" | curl -sS -X POST -T - -H 'content-type: text/plain' -H "authorization: Bearer $pub_tok" \
    "$url" >/dev/null
  curl -sS -H 'content-type: application/json' -H "authorization: Bearer $pub_tok" \
    -d '{"status":"succeeded","exit_code":0}' "http://127.0.0.1:$PORT/v1/jobs/$job/status" >/dev/null
  wait $(jobs -p | grep -v "^$gw$") 2>/dev/null || true
  for c in gzip zstd; do cmp -s "$work/$name.identity" "$work/$name.$c" || { echo "$name: $c decodes differently" >&2; exit 1; }; done
  raw=$(wc -c <"$log"); sse=$(cat "$work/$name.identity.size")
  gz=$(cat "$work/$name.gzip.size"); zs=$(cat "$work/$name.zstd.size")
  sid=$(sock "$work/$name.raw-identity.json"); sgz=$(sock "$work/$name.raw-gzip.json"); szs=$(sock "$work/$name.raw-zstd.json")
  tot_raw=$((tot_raw + raw)); tot_sse=$((tot_sse + sse)); tot_gz=$((tot_gz + gz)); tot_zs=$((tot_zs + zs))
  tot_sid=$((tot_sid + sid)); tot_sgz=$((tot_sgz + sgz)); tot_szs=$((tot_szs + szs))
  printf '%-12s %10d %10d %10d %10d %7.1f%% %7.1f%% %8.1f%% %8.1f%% %8.1f%%\n' "$name" "$raw" "$sse" "$gz" "$zs" \
    "$(echo "100*$gz/$sse" | bc -l)" "$(echo "100*$zs/$sse" | bc -l)" \
    "$(echo "100*$sid/$sse" | bc -l)" "$(echo "100*$sgz/$sse" | bc -l)" "$(echo "100*$szs/$sse" | bc -l)"
  [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; cp "$work/$name".* "$KEEP/"; }
  if [ $capgo = 1 ]; then
    wp=$(ws_bytes "$work/$name.ws-plain"); wd=$(ws_bytes "$work/$name.ws-deflate")
    ws_lines+=("$(printf '%-12s %10d %10d %7.1f%%' "$name" "$wp" "$wd" "$(echo "100*$wd/($wp+($wp==0))" | bc -l)")")
    tot_wp=$((tot_wp + wp)); tot_wd=$((tot_wd + wd))
  fi
done
printf '%-12s %10d %10d %10d %10d %7.1f%% %7.1f%% %8.1f%% %8.1f%% %8.1f%%\n' all "$tot_raw" "$tot_sse" "$tot_gz" "$tot_zs" \
  "$(echo "100*$tot_gz/$tot_sse" | bc -l)" "$(echo "100*$tot_zs/$tot_sse" | bc -l)" \
  "$(echo "100*$tot_sid/$tot_sse" | bc -l)" "$(echo "100*$tot_sgz/$tot_sse" | bc -l)" "$(echo "100*$tot_szs/$tot_sse" | bc -l)"
echo "sock_*%: bytes the socket carried (status line, headers, chunk framing, body) per uncompressed SSE body byte"
if [ $capgo = 1 ]; then
  echo
  printf '%-12s %10s %10s %8s\n' log ws_plain ws_deflate deflate_%
  printf '%s\n' "${ws_lines[@]}"
  printf '%-12s %10d %10d %7.1f%%\n' all "$tot_wp" "$tot_wd" "$(echo "100*$tot_wd/($tot_wp+($tot_wp==0))" | bc -l)"
  echo "ws_*: bytes a Capgo WebSocket reader's socket read (Node's ws), without and with permessage-deflate"
fi
