"""The nodes' access logs of a balancing run kept by `KEEP=1 bash
benches/load/run.sh`: RUN_DIR/n1/, n2/, n3/ with logs/access.log written
with docker/apache/node.conf's LogFormat (the proxy's port second, the
duration in microseconds (%D) fourth from the end, the requests before
this one on its connection (%k) third from the end, the start last).
Read by report.py (goodput during a burst) and node_gaps.py.
"""

import os


def epoch_seconds(field):
    """A request's start (microseconds since the epoch, or milliseconds in
    logs written before the thirteenth session) in seconds."""
    n = int(field)
    return n / 1e6 if n > 10**14 else n / 1000.0


def visitor_requests(run_dir):
    """(node, port, start, end, kept) of every visitor's request (the
    generator's, User-Agent "openloop"), times in seconds since the epoch;
    none when the run kept no logs."""
    out = []
    nodes = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []
    for node in nodes:
        path = os.path.join(run_dir, node, "logs", "access.log")
        if not os.path.isfile(path):
            continue
        for line in open(path, errors="replace"):
            if '"openloop"' not in line:
                continue
            f = line.split()
            try:
                start = epoch_seconds(f[-1])
                out.append((node, f[1], start, start + int(f[-4]) / 1e6, f[-3]))
            except (IndexError, ValueError):
                continue
    return out
