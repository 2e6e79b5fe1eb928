#!/usr/bin/env python3
"""How long a node's worker waits between two visitors' requests on the
same connection, from the nodes' access logs.

Usage: node_gaps.py RUN_DIR [SECONDS]

RUN_DIR is a balancing run's directory kept by `KEEP=1 bash
benches/load/run.sh` (n1/, n2/, n3/ with logs/access.log written with
docker/apache/node.conf's LogFormat: the proxy's port second, the duration
in microseconds (%D) fourth from the end, %k third from the end, the start
in microseconds since the epoch last). Within the first SECONDS (default
10: the burst of q-overload) from the first visitor request any node
began, for each two requests in a row on one connection (a prefork
worker serves one connection at a time), the gap is the second's start
less the first's end: what the worker spends between them (the proxy
reading the answer and sending it the next request, the node's own
keep-alive handling). While requests wait in the proxy, every gap is time
a worker could have worked. Prints the gaps' count, mean and percentiles,
and how many requests came on a new connection (%k = 0).
"""

import sys

from nodelogs import visitor_requests


def main():
    run_dir = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    reqs = visitor_requests(run_dir)
    if not reqs:
        print("no visitor requests in the nodes' logs under %s" % run_dir)
        return
    t0 = min(r[2] for r in reqs)
    window = [r for r in reqs if r[2] < t0 + seconds]
    by_conn = {}
    for node, port, start, end, _ in window:
        by_conn.setdefault((node, port), []).append((start, end))
    gaps = []
    for spans in by_conn.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            gaps.append(start - end)
    gaps.sort()
    new = sum(1 for r in window if r[4] == "0")
    if not gaps:
        print("requests %d, no two on one connection" % len(window))
        return

    def pct(p):
        return gaps[min(len(gaps) - 1, int(p / 100.0 * len(gaps)))] * 1e6

    print(
        "requests %d (on new connections %d), gaps %d: mean %.0f µs, p50 %.0f, p90 %.0f, p99 %.0f, max %.0f"
        % (len(window), new, len(gaps), sum(gaps) / len(gaps) * 1e6, pct(50), pct(90), pct(99), gaps[-1] * 1e6)
    )


if __name__ == "__main__":
    main()
