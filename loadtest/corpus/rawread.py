#!/usr/bin/env python3
"""Reads one HTTP/1.1 response off a raw socket and says where its bytes went.

Usage: rawread.py URL TOKEN ACCEPT_ENCODING OUT_PREFIX
Writes OUT_PREFIX.body (the body after chunked framing, still content-encoded) and prints
one JSON line: bytes off the socket, header bytes, chunk-framing bytes, body bytes, chunks.
curl's `size_download` counts the body only, so this is what the socket really carried.
"""
import json
import socket
import sys
from urllib.parse import urlsplit


def main():
    url, token, coding, out = sys.argv[1:5]
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80))
    path = u.path + (f"?{u.query}" if u.query else "")
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: text/event-stream\r\n"
        f"Accept-Encoding: {coding}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    sock.sendall(req.encode())
    raw = bytearray()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        raw += data
        if raw.endswith(b"0\r\n\r\n") and b"\r\n\r\n" in raw:
            # The last chunk: the response is over (the server may keep the socket).
            head, _, rest = raw.partition(b"\r\n\r\n")
            if _complete(rest):
                break
    sock.close()
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    body, chunks = _dechunk(rest)
    with open(out + ".body", "wb") as f:
        f.write(body)
    print(json.dumps({
        "socket_bytes": len(raw),
        "header_bytes": len(head) + 4,
        "framing_bytes": len(rest) - len(body),
        "body_bytes": len(body),
        "chunks": chunks,
        "content_encoding": _header(head, b"content-encoding"),
    }))


def _header(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode()
    return None


def _complete(rest):
    try:
        _dechunk(rest, strict=True)
        return True
    except ValueError:
        return False


def _dechunk(data, strict=False):
    body = bytearray()
    chunks = 0
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            if strict:
                raise ValueError("cut")
            break
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(body), chunks
        if j + 2 + size + 2 > len(data):
            if strict:
                raise ValueError("cut")
            break
        body += data[j + 2 : j + 2 + size]
        chunks += 1
        i = j + 2 + size + 2
    return bytes(body), chunks


if __name__ == "__main__":
    main()
