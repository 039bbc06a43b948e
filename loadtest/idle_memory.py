#!/usr/bin/env python3
"""Idle memory per SSE reader, cleartext or TLS, or per Capgo WebSocket reader (--kind ws):
opens N readers to a running gateway, waits until each has its stream's opening bytes (a
WebSocket: its 101 and the session behind it), then reports the server's VmRSS growth per
reader.

  python3 loadtest/idle_memory.py --url https://127.0.0.1:8443 --ca cert.pem --pid PID \
      --readers 5000 --secret S --issuer I --audience A

Each reader has its own subject (a per-subject stream cap does not interfere) and follows one
of --jobs jobs. Loopback only. --encoding gzip|zstd sends that Accept-Encoding. Used by loadtest/idle-memory.sh, which starts fresh servers.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import sys
import time
import urllib.parse


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret: str, issuer: str, audience: str, sub: str, job: str) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "sub": sub, "job_id": job, "iat": now, "exp": now + 3600}
    payload = b64(json.dumps(claims).encode())
    signing = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def open_reader(host, port, ctx, path, tok, encoding):
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost" if ctx else None)
    accept = f"accept-encoding: {encoding}\r\n" if encoding != "off" else ""
    req = (f"GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {tok}\r\n"
           f"accept: text/event-stream\r\n{accept}\r\n")
    writer.write(req.encode())
    await writer.drain()
    seen = b""
    while b"tailgate stream open" not in seen:
        chunk = await asyncio.wait_for(reader.read(4096), 15)
        if not chunk:
            raise RuntimeError(f"closed before the stream opened: {seen[:200]!r}")
        seen += chunk
    if not seen.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not 200: {seen[:200]!r}")
    # The opening is written uncompressed in the coding's stored framing, so it is readable
    # above; the header says whether the coding was chosen.
    if encoding != "off" and f"content-encoding: {encoding}".encode() not in seen.lower():
        raise RuntimeError(f"not {encoding}: {seen[:200]!r}")
    return reader, writer


async def open_ws_reader(host, port, ctx, job, tok):
    """A Capgo reader: the WebSocket upgrade of {prefix}/{job}/stream?token=..."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost" if ctx else None)
    key = base64.b64encode(hashlib.sha1(tok.encode()).digest()[:16]).decode()
    path = f"/build_logs_direct/{job}/stream?token={urllib.parse.quote(tok)}"
    req = (f"GET {path} HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
           f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n")
    writer.write(req.encode())
    await writer.drain()
    seen = b""
    while b"\r\n\r\n" not in seen:
        chunk = await asyncio.wait_for(reader.read(4096), 15)
        if not chunk:
            raise RuntimeError(f"closed before the upgrade: {seen[:200]!r}")
        seen += chunk
    if not seen.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"not 101: {seen[:200]!r}")
    return reader, writer


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--readers", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--secret", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--kind", choices=["sse", "ws"], default="sse")
    p.add_argument("--encoding", choices=["off", "gzip", "zstd"], default="off",
                   help="Accept-Encoding of the SSE readers (off: none)")
    a = p.parse_args()
    url = urllib.parse.urlparse(a.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback only")
    ctx = None
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=a.ca)
        ctx.set_alpn_protocols(["http/1.1"])
    before = rss(a.pid)
    conns = []
    started = time.monotonic()
    for start in range(0, a.readers, a.batch):
        batch = []
        for i in range(start, min(a.readers, start + a.batch)):
            job = f"idle-{i % a.jobs}"
            tok = token(a.secret, a.issuer, a.audience, f"reader-{i}", job)
            if a.kind == "ws":
                batch.append(open_ws_reader(url.hostname, url.port, ctx, job, tok))
            else:
                batch.append(open_reader(url.hostname, url.port, ctx, f"/v1/jobs/{job}/logs", tok, a.encoding))
        conns.extend(await asyncio.gather(*batch))
    opened = time.monotonic() - started
    # Let the allocator settle: the server's per-reader state is built; nothing else runs.
    await asyncio.sleep(2)
    after = rss(a.pid)
    per = (after - before) / a.readers
    print(json.dumps({
        "kind": a.kind, "scheme": url.scheme, "encoding": a.encoding, "readers": a.readers, "rss_before": before, "rss_after": after,
        "rss_bytes_per_reader": round(per), "open_secs": round(opened, 1),
    }))
    for _, w in conns:
        w.close()


asyncio.run(main())
