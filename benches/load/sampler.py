#!/usr/bin/env python3
"""Sample, during a balancing run, what the nodes' listen sockets and the
proxy's connections to them look like (benches/load/run.sh).

Every --interval seconds, two sock_diag netlink dumps (what `ss` reads, but
without a process per call nor `ss -p`'s walk over every process's file
descriptors, which cost about 30 ms of CPU a sample) give for each node port:
  * backlog: connections waiting in the node's accept queue (Recv-Q of the
    LISTEN socket): on prefork, visitors waiting for a worker to be free;
  * proxy: established connections from the proxy's processes (--pids) to
    the node, in use or idle in its keep-alive pool; on prefork each holds a
    worker.
With --admin PORT (webcluster), each sample also reads webcluster's
/status.json: each node's scraped busy workers, capacity, webcluster's
estimate of its busy workers now (what `busyness` balances by), in flight
and state, and its limit (issue 17); summarised as means, how often the
node looked to have an idle worker (estimated busy + 1 <= capacity) while
its last scrape said it had none, and how often the limit was below the
node's capacity.
Runs until SIGTERM/SIGINT or --max-seconds, then writes a JSON summary
(max and mean of both, and the seconds during which the backlog was not
empty) to --out.
"""

import argparse
import json
import os
import resource
import signal
import socket
import struct
import time
import urllib.request

stop = False


def on_signal(*_):
    global stop
    stop = True


# Netlink sock_diag (linux/inet_diag.h), IPv4 TCP.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED, TCP_LISTEN = 1, 10
NLMSG_HDR = struct.Struct("=IHHII")


def diag_dump(states):
    """[(state, sport, dport, rqueue, inode)] of the IPv4 TCP sockets in states."""
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
    msg = NLMSG_HDR.pack(NLMSG_HDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as s:
        s.sendto(msg, (0, 0))
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off + NLMSG_HDR.size <= len(data):
                length, kind = NLMSG_HDR.unpack_from(data, off)[:2]
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR or length < NLMSG_HDR.size:
                    raise OSError("sock_diag dump failed")
                body = off + NLMSG_HDR.size
                state = data[body + 1]
                sport, dport = struct.unpack_from(">HH", data, body + 4)
                rqueue, _wq, _uid, inode = struct.unpack_from("=IIII", data, body + 56)
                out.append((state, sport, dport, rqueue, inode))
                off += (length + 3) & ~3


def socket_inodes(pids):
    """Inodes of the sockets the processes hold open."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def snapshot(ports, pids):
    backlog = {p: 0 for p in ports}
    proxy = {p: 0 for p in ports}
    # A listening socket's receive queue is its accept queue: connections
    # the node has not taken yet.
    for _, sport, _, rqueue, _ in diag_dump(1 << TCP_LISTEN):
        if str(sport) in backlog:
            backlog[str(sport)] = rqueue
    mine = socket_inodes(pids)
    for _, _, dport, _, inode in diag_dump(1 << TCP_ESTABLISHED):
        if str(dport) in proxy and inode in mine:
            proxy[str(dport)] += 1
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
        except OSError:
            pass
        if a.admin:
            try:
                snap = json.load(urllib.request.urlopen(
                    "http://127.0.0.1:%s/status.json" % a.admin, timeout=1))
                views.append({n["name"]: n for g in snap.get("groups", []) for n in g.get("nodes", [])})
            except (OSError, ValueError):
                pass
        time.sleep(max(0.0, a.interval - (time.time() - t)))
    me = resource.getrusage(resource.RUSAGE_SELF)
    summary = {"interval_s": a.interval, "samples": len(samples), "nodes": {},
               "cpu_s": me.ru_utime + me.ru_stime}
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
            # This proxy's limit at the node (issue 17).
            limits = [(v["limit"], v.get("capacity")) for v in vs if v.get("limit") is not None]
            summary["nodes"][name]["webcluster"] = {
                "samples": len(vs),
                "scraped_busy_mean": sum(scraped) / len(scraped) if scraped else None,
                "estimated_busy_mean": sum(est) / len(est),
                "estimated_busy_min": min(est),
                "inflight_max": max(v.get("inflight") or 0 for v in vs),
                "inflight_mean": sum(v.get("inflight") or 0 for v in vs) / len(vs),
                "limit_mean": sum(l for l, _ in limits) / len(limits) if limits else None,
                "samples_limit_below_capacity": sum(1 for l, c in limits if c and l < c),
                "samples_scraped_full": full,
                "samples_scraped_full_but_estimated_free": looked_free_when_full,
                "states": sorted(set(str(v.get("state")) for v in vs)),
            }
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
