#!/usr/bin/env bash
# Idle memory per SSE reader over cleartext (uncompressed, gzip, zstd) and over TLS, and per
# Capgo WebSocket reader, each on a fresh release gateway:
#   loadtest/idle-memory.sh            (READERS=5000 JOBS=10 by default)
# The gateway runs at its default worker threads (WORKERS=N sets TOKIO_WORKER_THREADS, the
# setting of the older figures). RUNS picks the cases (default "sse sse-gzip sse-zstd tls ws"); BIN_DIR the directory of the
# release `tailgate` (default target/release). Needs python3 and openssl; builds nothing: run
# `cargo build --release -p tailgate` first.
set -euo pipefail
READERS=${READERS:-5000}
JOBS=${JOBS:-10}
RUNS=${RUNS:-sse sse-gzip sse-zstd tls ws}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-$root/target/release}/tailgate
work=$(mktemp -d /tmp/tailgate-idle.XXXXXX)
secret=idle-secret-$$-0123456789abcdef
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

run() { # $1: sse|ws, $2: http|https, $3: off|gzip|zstd, extra serve flags after
    local kind=$1 scheme=$2 encoding=$3; shift 3
    env ${WORKERS:+TOKIO_WORKER_THREADS=$WORKERS} TAILGATE_LOG=error "$bin" serve --listen 127.0.0.1:0 \
        --memory-only --jwt-secret "$secret" --jwt-issuer idle --jwt-audience idle "$@" > "$work/out" &
    pid=$!
    until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.1; done
    local addr
    addr=$(sed -n 's/.*listening on [a-z]*:\/\///p' "$work/out" | head -1)
    python3 "$root/loadtest/idle_memory.py" --url "$scheme://$addr" --ca "$work/cert.pem" \
        --pid "$pid" --readers "$READERS" --jobs "$JOBS" --kind "$kind" \
        --encoding "$encoding" --secret "$secret" --issuer idle --audience idle
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

for r in $RUNS; do
    case $r in
        sse) run sse http off ;;
        sse-gzip) run sse http gzip ;;
        sse-zstd) run sse http zstd ;;
        tls) run sse https off --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" ;;
        ws) run ws http off ;;
        *) echo "unknown run $r" >&2; exit 2 ;;
    esac
done
