#!/usr/bin/env python3
"""Issue 18's performance lines against running processes (started by archive.sh): one
gateway A on Redis with the archive (defaults), a second (B) and a third (C) on the same
Redis and bucket that never saw the jobs live. Standard library only.

  size    each corpus log as one job: object bytes (the gateway's own counter) / raw text
  lag     300 jobs finishing together: terminal status -> archived (meta `fa` -> `ar`, ms)
  resume  B, never saw the jobs: time to the first event of a resume from the middle
          (cold: index + frame GETs; then warm: cached), one job after another
  replay  C: 1,000 readers replay archived jobs from seq 1 at once; every id checked,
          C's RSS sampled every 50 ms (and VmHWM)

Usage: archive.py A_PORT B_PORT C_PORT REDIS_PORT C_PID CORPUS_DIR OUT_JSON
Secrets come from the environment: SECRET, ISS, AUD.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import time

A, B, C, REDIS, C_PID = (int(v) for v in sys.argv[1:6])
CORPUS, OUT = sys.argv[6], sys.argv[7]
SECRET, ISS, AUD = os.environ["SECRET"], os.environ["ISS"], os.environ["AUD"]
JOBS = int(os.environ.get("JOBS", "300"))
READERS = int(os.environ.get("READERS", "1000"))
RUN = os.environ.get("RUN_ID", "ar%d" % (int(time.time()) % 100000))
PHASES = os.environ.get("PHASES", "size,lag,resume,replay").split(",")
# "name:pid ..." (archive.sh sets it): each process's CPU seconds during the lag phase.
CPU_PIDS = [kv.split(":") for kv in os.environ.get("CPU_PIDS", "").split()]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(job, publish=False, sub="archive-bench"):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    # Readers get a subject each: streams per subject are capped (--max-streams-per-subject).
    claims = {"iss": ISS, "aud": AUD, "sub": sub, "job_id": job,
              "exp": int(time.time()) + 3600}
    if publish:
        claims["scope"] = "publish"
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# -- a minimal Redis client (RESP), enough for HMGET / EXISTS / GET --------------------
class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    @staticmethod
    def encode(args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, cmds):
        """Every command sent in one write, then every reply read: one round trip."""
        self.sock.sendall(b"".join(self.encode(c) for c in cmds))
        return [self.read() for _ in cmds]

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"resp {line!r}")


# -- HTTP over asyncio streams -------------------------------------------------------
async def request(port, method, path, headers=(), body=b""):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    head += f"content-length: {len(body)}\r\n\r\n"
    w.write(head.encode() + body)
    await w.drain()
    data = await r.read()
    w.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def publish(port, job, text):
    auth = ("authorization", "Bearer " + token(job, True))
    st, body = await request(port, "POST", f"/v1/jobs/{job}/logs",
                             [auth, ("content-type", "text/plain")], text)
    assert st == 200, (st, body[:200])


async def finish(port, job):
    auth = ("authorization", "Bearer " + token(job, True))
    st, body = await request(port, "POST", f"/v1/jobs/{job}/status",
                             [auth, ("content-type", "application/json")],
                             b'{"status":"succeeded","exit_code":0}')
    assert st == 200, (st, body[:200])


def metric(port, name):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def cpu_s(pid):
    """The process's user + system CPU seconds so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all():
    """Each process's CPU seconds, this script's own, and the machine's idle seconds."""
    out = {name: cpu_s(pid) for name, pid in CPU_PIDS}
    t = os.times()
    out["driver"] = t.user + t.system
    with open("/proc/stat") as f:
        out["machine_idle"] = int(f.readline().split()[4]) / os.sysconf("SC_CLK_TCK")
    return out


def archived(redis, job):
    return redis.cmd("HGET", f"tailgate:{{{job}}}:meta", "ar") is not None


def wait_archived(redis, jobs, limit):
    # One pipelined round trip per poll, so the watcher takes little of the CPU the
    # gateways archive with.
    deadline = time.time() + limit
    left = list(jobs)
    while left and time.time() < deadline:
        marks = redis.pipeline([("HGET", f"tailgate:{{{j}}}:meta", "ar") for j in left])
        left = [j for j, mark in zip(left, marks) if mark is None]
        time.sleep(0.05)
    return set(left)


async def size_phase(redis, logs, report):
    rows = []
    for name, text in logs:
        job = f"{RUN}-size-{name.split('.')[0]}"
        # Any instance may archive it: their counters together.
        before = sum(metric(p, "tailgate_archive_bytes_total") for p in (A, B, C))
        await publish(A, job, text)
        await finish(A, job)
        assert not wait_archived(redis, [job], 120), f"{job} not archived"
        obj = sum(metric(p, "tailgate_archive_bytes_total") for p in (A, B, C)) - before
        rows.append({"log": name, "raw_bytes": len(text), "object_bytes": int(obj),
                     "pct": round(100 * obj / len(text), 2)})
    raw = sum(r["raw_bytes"] for r in rows)
    obj = sum(r["object_bytes"] for r in rows)
    report["size"] = {"logs": rows, "raw_bytes": raw, "object_bytes": obj,
                      "pct": round(100 * obj / raw, 2), "load": uptime()}


async def lag_phase(redis, logs, report):
    small = [t for n, t in logs if not n.startswith("pip")]
    jobs = [f"{RUN}-lag-{i}" for i in range(JOBS)]
    sem = asyncio.Semaphore(16)

    async def one(i, job):
        async with sem:
            await publish(A, job, small[i % len(small)])
    await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
    load = uptime()
    # A marker for a profiler started beside the run (loadtest/archive-profile.sh).
    with open(OUT + ".lag-start", "w") as f:
        f.write(str(time.time()))
    cpu0 = cpu_all()
    # All 300 statuses at once.
    t0 = time.time()
    await asyncio.gather(*(finish(A, j) for j in jobs))
    finished_in = time.time() - t0
    left = wait_archived(redis, jobs, 300)
    took = time.time() - t0
    cpu1 = cpu_all()
    lags = []
    for job in jobs:
        fa, ar = redis.cmd("HMGET", f"tailgate:{{{job}}}:meta", "fa", "ar")
        if ar is not None:
            lags.append((int(ar) - int(fa)) / 1000)
    gone = sum(redis.cmd("EXISTS", f"tailgate:{{{j}}}:log") == 0 for j in jobs)
    report["lag"] = {"jobs": JOBS, "raw_bytes": sum(len(small[i % len(small)]) for i in range(JOBS)),
                     "statuses_sent_in_s": round(finished_in, 2),
                     "not_archived": len(left), "streams_gone": gone,
                     "p50_s": round(pct(lags, 50), 2), "p99_s": round(pct(lags, 99), 2),
                     "max_s": round(max(lags), 2), "load_before": load, "load_after": uptime(),
                     "all_archived_in_s": round(took, 2),
                     "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}}
    return jobs


async def first_event(port, job, last):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = (f"GET /v1/jobs/{job}/logs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"accept: text/event-stream\r\nauthorization: Bearer {token(job)}\r\n"
            f"last-event-id: {last}\r\n\r\n")
    t0 = time.perf_counter()
    w.write(head.encode())
    await w.drain()
    seen = b""
    while True:
        chunk = await r.read(65536)
        if not chunk:
            raise RuntimeError(f"{job}: no event")
        seen += chunk
        if b"\nid: " in seen:
            took = time.perf_counter() - t0
            break
    w.close()
    want = f"\nid: {last + 1}".encode()
    assert want in seen, (job, seen[:300])
    return took * 1000


async def resume_phase(jobs, lasts, report):
    out = {}
    for label in ("cold", "warm"):
        times = [await first_event(B, j, lasts[j] // 2) for j in jobs]
        out[label] = {"n": len(times), "p50_ms": round(pct(times, 50), 2),
                      "p99_ms": round(pct(times, 99), 2), "max_ms": round(max(times), 2)}
    out["load"] = uptime()
    report["resume"] = out


def rss(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) * 1024
    return vals


async def reader(n, job, last, stats):
    r, w = await asyncio.open_connection("127.0.0.1", C, limit=1 << 20)
    auth = token(job, sub=f"reader-{n}")
    head = (f"GET /v1/jobs/{job}/logs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"accept: text/event-stream\r\nauthorization: Bearer {auth}\r\n\r\n")
    w.write(head.encode())
    await w.drain()
    expect, tail, got = 1, b"", 0
    first = True
    while True:
        chunk = await r.read(1 << 18)
        if not chunk:
            break
        if first:
            first = False
            status = chunk.split(b" ", 2)[1]
            if status != b"200":
                stats["refused"] += 1
                stats["why"] = chunk[:300].decode(errors="replace")
        data = tail + chunk
        # Whole lines only; the last line end stays, since it may precede an `id:`.
        cut = max(data.rfind(b"\n"), 0)
        whole, tail = data[:cut], data[cut:]
        start = 0
        while (i := whole.find(b"\nid: ", start)) >= 0:
            j = i + 5
            k = j
            while k < len(whole) and 48 <= whole[k] <= 57:
                k += 1
            seq = int(whole[j:k])
            if seq != expect:
                stats["disorder"] += 1
            expect = seq + 1
            got += 1
            start = k
    w.close()
    stats["lost"] += max(0, last - got)
    stats["extra"] += max(0, got - last)
    stats["done"] += 1


async def replay_phase(jobs, lasts, report):
    stats = {"lost": 0, "extra": 0, "disorder": 0, "done": 0, "refused": 0}
    peak = 0
    stop = False

    async def sample():
        nonlocal peak
        while not stop:
            peak = max(peak, rss(C_PID)["VmRSS"])
            await asyncio.sleep(0.05)
    before = rss(C_PID)["VmRSS"]
    sampler = asyncio.create_task(sample())
    t0 = time.time()
    picks = [jobs[i % len(jobs)] for i in range(READERS)]
    await asyncio.gather(*(reader(n, j, lasts[j], stats) for n, j in enumerate(picks)))
    took = time.time() - t0
    stop = True
    await sampler
    budget = 1 << 30
    events = sum(lasts[j] for j in picks)
    report["replay"] = {"readers": READERS, "events": events, "seconds": round(took, 1),
                        **stats, "rss_before_mb": before >> 20, "rss_peak_mb": peak >> 20,
                        "vmhwm_mb": rss(C_PID)["VmHWM"] >> 20,
                        "budget_plus_25pct_mb": (budget + budget // 4) >> 20, "load": uptime()}


async def main():
    redis = Redis(REDIS)
    logs = []
    for name in sorted(os.listdir(CORPUS)):
        if name.endswith(".log"):
            with open(os.path.join(CORPUS, name), "rb") as f:
                logs.append((name, f.read()))
    report = {}
    if "size" in PHASES:
        await size_phase(redis, logs, report)
        print(json.dumps(report["size"]), flush=True)
    if "lag" not in PHASES:
        with open(OUT, "w") as f:
            json.dump(report, f, indent=1)
        return
    jobs = await lag_phase(redis, logs, report)
    print(json.dumps(report["lag"]), flush=True)
    if "resume" not in PHASES and "replay" not in PHASES:
        with open(OUT, "w") as f:
            json.dump(report, f, indent=1)
        return
    lasts = {}
    for job in jobs:
        nxt = redis.cmd("HGET", f"tailgate:{{{job}}}:meta", "next")
        lasts[job] = int(nxt) - 1
    if "resume" in PHASES:
        await resume_phase(jobs, lasts, report)
        print(json.dumps(report["resume"]), flush=True)
    if "replay" in PHASES:
        await replay_phase(jobs, lasts, report)
        print(json.dumps(report["replay"]), flush=True)
    with open(OUT, "w") as f:
        json.dump(report, f, indent=1)


asyncio.run(main())
