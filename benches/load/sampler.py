#!/usr/bin/env python3
"""Sample, during a balancing run, what the nodes' listen sockets and the
proxy's connections to them look like (benches/load/run.sh).

Every --interval seconds, two `ss` calls give for each node port:
  * backlog: connections waiting in the node's accept queue (Recv-Q of the
    LISTEN socket): on prefork, visitors waiting for a worker to be free;
  * proxy: established connections from the proxy's processes (--pids) to
    the node, in use or idle in its keep-alive pool; on prefork each holds a
    worker.
With --admin PORT (webcluster), each sample also reads webcluster's
/status.json: each node's scraped busy workers, capacity, webcluster's
estimate of its busy workers now (what `busyness` balances by), in flight
and state; summarised as means, and how often the node looked to have an
idle worker (estimated busy + 1 <= capacity) while its last scrape said it
had none.
Runs until SIGTERM/SIGINT or --max-seconds, then writes a JSON summary
(max and mean of both, and the seconds during which the backlog was not
empty) to --out.
"""

import argparse
import json
import urllib.request
import re
import signal
import subprocess
import time

stop = False


def on_signal(*_):
    global stop
    stop = True


def ss(*args):
    return subprocess.run(["ss", "-H", *args], capture_output=True, text=True, timeout=5).stdout


def snapshot(ports, pids):
    backlog = {p: 0 for p in ports}
    proxy = {p: 0 for p in ports}
    sport = "( " + " or ".join("sport = :%s" % p for p in ports) + " )"
    dport = "( " + " or ".join("dport = :%s" % p for p in ports) + " )"
    for line in ss("-ltn", sport).splitlines():
        f = line.split()
        # State Recv-Q Send-Q Local Peer (with -l the state column is shown)
        if len(f) >= 4 and f[0] == "LISTEN":
            port = f[3].rsplit(":", 1)[-1]
            if port in backlog:
                backlog[port] = int(f[1])
    for line in ss("-tnp", "state", "established", dport).splitlines():
        f = line.split()
        # Recv-Q Send-Q Local Peer users (no state column with a state filter)
        if len(f) >= 5:
            port = f[3].rsplit(":", 1)[-1]
            if port in proxy and any(("pid=%s," % pid) in line for pid in pids):
                proxy[port] += 1
    return backlog, proxy


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ports", nargs="+", required=True, help="node ports, in node order")
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--pids", nargs="+", required=True, help="the proxy's processes")
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--admin", help="webcluster admin port, to sample its view of the nodes")
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    samples = []
    views = []
    end = time.time() + a.max_seconds
    while not stop and time.time() < end:
        t = time.time()
        try:
            samples.append(snapshot(a.ports, a.pids))
        except (OSError, subprocess.SubprocessError):
            pass
        if a.admin:
            try:
                snap = json.load(urllib.request.urlopen(
                    "http://127.0.0.1:%s/status.json" % a.admin, timeout=1))
                views.append({n["name"]: n for g in snap.get("groups", []) for n in g.get("nodes", [])})
            except (OSError, ValueError):
                pass
        time.sleep(max(0.0, a.interval - (time.time() - t)))
    summary = {"interval_s": a.interval, "samples": len(samples), "nodes": {}}
    for name, port in zip(a.names, a.ports):
        bl = [s[0][port] for s in samples]
        px = [s[1][port] for s in samples]
        summary["nodes"][name] = {
            "backlog_max": max(bl, default=0),
            "backlog_mean": sum(bl) / len(bl) if bl else 0,
            "backlog_nonempty_s": sum(1 for v in bl if v > 0) * a.interval,
            "proxy_conns_max": max(px, default=0),
            "proxy_conns_mean": sum(px) / len(px) if px else 0,
        }
        vs = [v[name] for v in views if name in v]
        if vs:
            est = [v.get("estimated_busy") or 0.0 for v in vs]
            scraped = [v.get("busy_workers") for v in vs if v.get("busy_workers") is not None]
            looked_free_when_full = sum(
                1 for v in vs
                if v.get("capacity") and v.get("busy_workers") is not None
                and v["busy_workers"] >= v["capacity"] and (v.get("estimated_busy") or 0) + 1 <= v["capacity"])
            full = sum(1 for v in vs if v.get("capacity") and v.get("busy_workers") is not None
                       and v["busy_workers"] >= v["capacity"])
            summary["nodes"][name]["webcluster"] = {
                "samples": len(vs),
                "scraped_busy_mean": sum(scraped) / len(scraped) if scraped else None,
                "estimated_busy_mean": sum(est) / len(est),
                "estimated_busy_min": min(est),
                "inflight_max": max(v.get("inflight") or 0 for v in vs),
                "samples_scraped_full": full,
                "samples_scraped_full_but_estimated_free": looked_free_when_full,
                "states": sorted(set(str(v.get("state")) for v in vs)),
            }
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
