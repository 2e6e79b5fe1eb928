#!/usr/bin/env python3
"""Open-loop HTTP load generator (stdlib only), for benches/load/run.sh.

Visitors arrive at a fixed rate whatever the latency: request i is due at
t0 + i / rate (or at Poisson-distributed times with --poisson), and each one
opens its OWN new TCP connection (like a browser on a first visit), sends one
`GET` with `Connection: close`, reads the whole response and closes. There is
no connection pool, so a slow or hung request never holds back the next
visitor (a closed-loop tool such as plain wrk would wait, and hide it).

Latency is measured from the request's INTENDED send time, not from when the
generator got round to sending it (coordinated-omission correction): if the
generator itself falls behind, that shows up as latency, and the JSON reports
the generator's own lag separately (`send_lag_ms`) so it can be told apart.

Every request has a deadline of --timeout seconds after its intended send
time; a request still unanswered then is aborted and counted as a timeout.
After the last arrival the generator waits for every request still in flight
(each at most until its deadline), so nothing in flight is silently dropped.

Output: one JSON object (to --out, or stdout) with counts, latency
percentiles over ALL requests (failures and timeouts included at the time
they failed, timeouts at >= the timeout, so the tail is a lower bound) and
over successful ones, a percentile curve for plotting, and each node's share
(read from a response header, X-Node by default, or else from the body's
first word after "node ").
"""

import argparse
import asyncio
import json
import math
import random
import resource
import sys
import time
from urllib.parse import urlsplit


def percentile(sorted_vals, q):
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


class Result:
    __slots__ = ("intended", "lag", "latency", "status", "node", "error")

    def __init__(self, intended):
        self.intended = intended
        self.lag = 0.0
        self.latency = None
        self.status = None
        self.node = None
        self.error = None


def parse_response(buf, node_header):
    """Parse a complete-or-partial HTTP/1.x response held in `buf`.

    Returns (done, status, node); done is False while more bytes are needed
    (a response without Content-Length ends at EOF, see connection_lost)."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return False, None, None
    lines = buf[:i].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line: %r" % lines[0][:80])
    status = int(parts[1])
    length = None
    chunked = False
    node = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == node_header:
            node = value.strip()
    body = buf[i + 4:]
    if node is None:
        text = body[:200].decode("latin-1", "replace")
        j = text.find("node ")
        if j >= 0 and text[j + 5:].split():
            node = text[j + 5:].split()[0]
    if length is not None and not chunked:
        return len(body) >= length, status, node
    return False, status, node


class Visitor(asyncio.Protocol):
    """One visitor: one new connection, one request, read to the end."""

    __slots__ = ("res", "request", "node_header", "buf", "transport", "timer", "loop", "done_cb")

    def __init__(self, res, request, node_header, loop, done_cb):
        self.res = res
        self.request = request
        self.node_header = node_header
        self.buf = bytearray()
        self.transport = None
        self.timer = None
        self.loop = loop
        self.done_cb = done_cb

    def finish(self, error=None):
        res = self.res
        if res.latency is not None:
            return
        res.latency = self.loop.time() - res.intended
        if error is not None:
            res.error = error
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            if error is None:
                self.transport.close()
            else:
                self.transport.abort()
        self.done_cb(self)

    def on_deadline(self):
        self.finish("timeout")

    def connection_made(self, transport):
        self.transport = transport
        if self.res.latency is not None:  # deadline passed while connecting
            transport.abort()
            return
        transport.write(self.request)

    def data_received(self, data):
        self.buf += data
        try:
            done, status, node = parse_response(self.buf, self.node_header)
        except ValueError:
            self.finish("BadResponse")
            return
        if done:
            self.res.status, self.res.node = status, node
            self.finish()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if self.res.latency is not None:
            return
        try:
            _, status, node = parse_response(self.buf, self.node_header)
        except ValueError:
            status, node = None, None
        if status is not None and exc is None:
            # The body ended at EOF (no Content-Length).
            self.res.status, self.res.node = status, node
            self.finish()
        else:
            self.finish(type(exc).__name__ if exc else "ClosedEarly")


async def run(args):
    u = urlsplit(args.url)
    host = u.hostname
    port = u.port or 80
    target = (u.path or "/") + ("?" + u.query if u.query else "")
    request = (
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: openloop.py\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n" % (target, u.netloc)
    ).encode()
    node_header = args.node_header.lower()
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    total = int(round(args.rate * args.duration))
    results = []
    inflight = set()
    all_done = loop.create_future()
    state = {"max_inflight": 0, "sending": True}

    def done(v):
        inflight.discard(v)
        if not inflight and not state["sending"] and not all_done.done():
            all_done.set_result(None)

    async def connect(v):
        try:
            await loop.create_connection(lambda: v, host, port)
        except OSError as e:
            v.finish(type(e).__name__)

    def arrive(res):
        res.lag = loop.time() - res.intended
        v = Visitor(res, request, node_header, loop, done)
        inflight.add(v)
        if len(inflight) > state["max_inflight"]:
            state["max_inflight"] = len(inflight)
        v.timer = loop.call_at(res.intended + args.timeout, v.on_deadline)
        loop.create_task(connect(v))

    t0 = loop.time() + 0.05
    due = t0
    for i in range(total):
        if args.poisson:
            if i > 0:
                due += rng.expovariate(args.rate)
        else:
            due = t0 + i / args.rate
        now = loop.time()
        if due > now + 0.0005:
            await asyncio.sleep(due - now)
        res = Result(due)
        results.append(res)
        arrive(res)
    send_end = loop.time()
    state["sending"] = False
    # Wait for every request still in flight (each ends by its deadline).
    if inflight:
        try:
            await asyncio.wait_for(all_done, timeout=args.timeout + 5)
        except asyncio.TimeoutError:
            pass
    end = loop.time()
    return summarise(args, results, t0, send_end, end, state["max_inflight"])


def summarise(args, results, t0, send_end, end, max_inflight):
    ok = [r for r in results if r.error is None and r.status is not None and 200 <= r.status < 400]
    timeouts = [r for r in results if r.error == "timeout"]
    errors = {}
    for r in results:
        if r.error and r.error != "timeout":
            errors[r.error] = errors.get(r.error, 0) + 1
    statuses = {}
    for r in results:
        if r.status is not None:
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    unfinished = sum(1 for r in results if r.latency is None)
    all_lat = sorted((r.latency if r.latency is not None else args.timeout) * 1000.0 for r in results)
    ok_lat = sorted(r.latency * 1000.0 for r in ok)
    lags = sorted(r.lag * 1000.0 for r in results)
    nodes = {}
    by_node = {}
    for r in ok:
        nodes[r.node or "?"] = nodes.get(r.node or "?", 0) + 1
        by_node.setdefault(r.node or "?", []).append(r.latency * 1000.0)

    def pct(vals):
        return {
            "p50": percentile(vals, 50),
            "p90": percentile(vals, 90),
            "p99": percentile(vals, 99),
            "p99.9": percentile(vals, 99.9),
            "max": vals[-1] if vals else None,
        }

    # Percentile curve for plotting: 1 - q = 10^-x for x in 0..4.
    curve = []
    steps = 80
    for s in range(steps + 1):
        x = 4.0 * s / steps
        q = 100.0 * (1.0 - 10 ** (-x))
        curve.append([round(q, 4), percentile(all_lat, q)])
    slow_1s = sum(1 for v in all_lat if v >= 1000.0)
    return {
        "url": args.url,
        "rate": args.rate,
        "duration_s": args.duration,
        "timeout_s": args.timeout,
        "arrivals": "poisson" if args.poisson else "uniform",
        "connection": "new connection per request (Connection: close)",
        "sent": len(results),
        "ok": len(ok),
        "timeouts": len(timeouts),
        "errors": errors,
        "failed": len(results) - len(ok),
        "unfinished": unfinished,
        "over_1s": slow_1s,
        "statuses": statuses,
        "achieved_rate": len(results) / max(1e-9, send_end - t0),
        "wall_s": end - t0,
        "max_inflight": max_inflight,
        "latency_ms": pct(all_lat),
        "latency_ok_ms": pct(ok_lat),
        "send_lag_ms": {"p50": percentile(lags, 50), "p99": percentile(lags, 99),
                        "max": lags[-1] if lags else None},
        "nodes": nodes,
        "latency_by_node_ms": {n: pct(sorted(v)) for n, v in sorted(by_node.items())},
        "curve": curve,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True, help="arrivals per second")
    p.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request deadline, s")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals, not uniform")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--node-header", default="X-Node")
    p.add_argument("--out", help="write the JSON here (default stdout)")
    args = p.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0:
        p.error("rate, duration and timeout must be positive")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    lat = out["latency_ms"]
    print("openloop: %d sent (%.0f/s), %d ok, %d timeouts, %d errors, p50 %.1f p99 %.1f p99.9 %.1f ms, nodes %s, lag p99 %.1f ms"
          % (out["sent"], out["achieved_rate"], out["ok"], out["timeouts"],
             sum(out["errors"].values()), lat["p50"] or 0, lat["p99"] or 0, lat["p99.9"] or 0,
             out["nodes"], out["send_lag_ms"]["p99"] or 0), file=sys.stderr)


if __name__ == "__main__":
    main()
