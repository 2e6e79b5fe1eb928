#!/usr/bin/env python3
"""A timeline of the nodes' busy workers, from their access logs.

Usage: node_timeline.py RUN_DIR [BUCKET_SECONDS] [FROM_S TO_S]

RUN_DIR is a balancing run's directory kept by `KEEP=1 bash
benches/load/run.sh` (it holds n1/, n2/, n3/ with logs/access.log written
with docker/apache/node.conf's LogFormat: the request's duration in
microseconds, %k, and its start in microseconds since the epoch last).
For each bucket (0.1 s by default) and node it prints the mean number of
workers busy with a request ("busy") and the connections that began in it
(%k = 0: "new"), times from the first logged request. Nodes idle at the
same instant while requests wait in the proxy show as a bucket where every
node's busy count drops together (how the huge-page stalls of the tenth
session were found: benches/README.md).
"""

import collections
import os
import sys

from nodelogs import epoch_seconds


def node_buckets(path, res):
    busy, new = collections.Counter(), collections.Counter()
    for line in open(path, errors="replace"):
        fields = line.split()
        try:
            start = epoch_seconds(fields[-1])
            dur = int(fields[-4]) / 1e6
            kept = fields[-3]
        except (IndexError, ValueError):
            continue
        if kept == "0":
            new[int(start / res)] += 1
        t = start
        while t < start + dur:
            b = int(t / res)
            end = min(start + dur, (b + 1) * res)
            busy[b] += end - t
            t = end
    return busy, new


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    res = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    lo = float(sys.argv[3]) if len(sys.argv) > 3 else float("-inf")
    hi = float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")
    nodes = sorted(n for n in os.listdir(run) if os.path.isfile(os.path.join(run, n, "logs", "access.log")))
    data = {n: node_buckets(os.path.join(run, n, "logs", "access.log"), res) for n in nodes}
    buckets = sorted(set().union(*(set(b) for b, _ in data.values())))
    if not buckets:
        sys.exit("no timed lines in %s/*/logs/access.log" % run)
    first = buckets[0]
    print("%8s  " % "s" + "  ".join("%11s" % ("%s busy/new" % n) for n in nodes))
    for b in range(first, buckets[-1] + 1):
        t = (b - first) * res
        if not lo <= t <= hi:
            continue
        print("%8.2f  " % t + "  ".join("%6.1f / %2d" % (data[n][0][b] / res, data[n][1][b]) for n in nodes))


if __name__ == "__main__":
    main()
