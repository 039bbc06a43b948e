#!/usr/bin/env python3
"""What each deflate scheme would send for one uncompressed SSE body, with zlib itself.

Usage: ideal.py SSE_BODY...   (bodies as the gateway sent them uncompressed; wire.sh keeps
them with KEEP=dir). Prints, per scheme, the deflate bytes as a % of the SSE bytes:
  whole       one stream, no flush (the floor: a file, not a live stream)
  sync        a sync flush after every event, never reset (the issue's 8.3 % scheme)
  sync+64k    the same, a fresh encoder every 64 KiB of input (the gateway's scheme)
  partial+64k a partial flush per event instead (an empty static block, not 4 bytes)
and, for sync+64k, what HTTP/1.1 chunk framing adds when each event is its own chunk.
With BURST=N, every scheme also flushes per N events (a reader finding N at once). With the
`brotli` and `zstandard` modules (`pip install brotli zstandard`), br (quality 5, window 2^17
... 2^22 as brotli picks) and zstd (level 3) flushed the same ways, reset every 64 KiB.
"""
import os
import sys
import zlib

RESET = 64 * 1024
LEVEL = 6


def events(body):
    """The body cut after each blank line (the opening, then one event each)."""
    out, i = [], 0
    while True:
        j = body.find(b"\n\n", i)
        if j < 0:
            if i < len(body):
                out.append(body[i:])
            return out
        out.append(body[i : j + 2])
        i = j + 2


def flushed(evs, mode, reset, level=LEVEL):
    """Per-event chunk sizes: each event compressed and flushed with `mode`."""
    sizes, z, fed = [], None, 0
    for ev in evs:
        if z is None or (reset and fed >= reset):
            z, fed = zlib.compressobj(level, zlib.DEFLATED, -15), 0
        sizes.append(len(z.compress(ev)) + len(z.flush(mode)))
        fed += len(ev)
    return sizes


def groups(evs, n):
    """The events joined n at a time (a reader that finds n events at once)."""
    return [b"".join(evs[i : i + n]) for i in range(0, len(evs), n)]


def other(evs, name, reset=RESET):
    """Sizes of `evs` flushed one by one with br or zstd (None without the module)."""
    try:
        if name == "br":
            import brotli

            make = lambda: brotli.Compressor(quality=5, lgwin=17)
            step = lambda c, ev: len(c.process(ev)) + len(c.flush())
        else:
            import zstandard

            make = lambda: zstandard.ZstdCompressor(level=3).compressobj()
            step = lambda c, ev: len(c.compress(ev)) + len(c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    except ImportError:
        return None
    sizes, c, fed = [], None, 0
    for ev in evs:
        if c is None or fed >= reset:
            c, fed = make(), 0
        sizes.append(step(c, ev))
        fed += len(ev)
    return sizes


def framing(sizes):
    """HTTP/1.1 chunked framing when every event is one chunk: hex size, CRLF, CRLF."""
    return sum(len(f"{s:x}") + 4 for s in sizes if s)


def main():
    rows = []
    tot = {}
    for path in sys.argv[1:]:
        body = open(path, "rb").read()
        evs = events(body)
        whole = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        r = {
            "sse": len(body),
            "events": len(evs),
            "whole": len(whole.compress(body)) + len(whole.flush()),
            "sync": sum(flushed(evs, zlib.Z_SYNC_FLUSH, 0)),
        }
        s64 = flushed(evs, zlib.Z_SYNC_FLUSH, RESET)
        r["sync+64k"] = sum(s64)
        r["sync+64k framed"] = sum(s64) + framing(s64)
        r["partial+64k"] = sum(flushed(evs, zlib.Z_PARTIAL_FLUSH, RESET))
        r["sync+64k level9"] = sum(flushed(evs, zlib.Z_SYNC_FLUSH, RESET, 9))
        burst = int(os.environ.get("BURST", "0"))
        runs = [("", evs)] + ([(f" /{burst}", groups(evs, burst))] if burst > 1 else [])
        for tag, evs_ in runs:
            if tag:
                r["sync+64k" + tag] = sum(flushed(evs_, zlib.Z_SYNC_FLUSH, RESET))
            for name in ("br", "zstd"):
                sizes = other(evs_, name)
                if sizes is not None:
                    r[name + "+64k" + tag] = sum(sizes)
        rows.append((path.rsplit("/", 1)[-1], r))
        for k, v in r.items():
            tot[k] = tot.get(k, 0) + v
    rows.append(("all", tot))
    keys = [k for k in tot if k not in ("sse", "events")]
    print(f"{'body':<24} {'sse_bytes':>10} {'events':>7} " + " ".join(f"{k:>16}" for k in keys))
    for name, r in rows:
        cells = " ".join(f"{100 * r[k] / r['sse']:15.1f}%" for k in keys)
        print(f"{name:<24} {r['sse']:>10} {r['events']:>7} {cells}")


if __name__ == "__main__":
    main()
