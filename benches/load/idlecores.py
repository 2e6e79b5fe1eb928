"""Where a machine's idle core time goes, from `perf sched timehist` output.

    python3 idlecores.py TIMEHIST_FILE LABEL PROXY_COMM REQUESTS_PER_SECOND

Prints one Markdown table row: the share of the cores' time spent idle;
for the proxy, the load generator (wrk) and the upstream (nginx), the
time each was runnable but waiting for a core *while another core was
idle* (woken onto a busy core, typically its waker's, and left there); and
how often the proxy was woken, per request. On a machine with fewer cores
than busy processes, the idle time is throughput lost, and this says whose
wake-ups left it idle (benches/README.md, "Thirteenth session").

A timehist line is one run of a task on a CPU ending at `time`, with the
time it waited to run after being woken (`sch delay`) and its run time.
"""

import collections
import re
import sys

LINE = re.compile(
    r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$"
)


def parse(path):
    """Per CPU: (start, end, task) runs; per task: (start, end) waits."""
    runs = collections.defaultdict(list)
    waits = collections.defaultdict(list)
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        end, cpu = float(m.group(1)), int(m.group(2))
        task = re.sub(r"\[\d+(/\d+)?\]", "", m.group(3)).strip()
        delay, run = float(m.group(5)) / 1000, float(m.group(6)) / 1000
        runs[cpu].append((end - run, end, task))
        if task != "<idle>" and delay > 0:
            waits[task].append((end - run - delay, end - run))
    return runs, waits


def overlap(a, b):
    """Total overlap of two lists of (start, end) intervals, each sorted."""
    total, j = 0.0, 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            total += max(0.0, min(e, b[k][1]) - max(s, b[k][0]))
            k += 1
    return total


def main():
    path, label, proxy, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    runs, waits = parse(path)
    if not runs:
        print("| %s | no scheduler events | | | | |" % label)
        return
    start = min(r[0][0] for r in runs.values())
    end = max(r[-1][1] for r in runs.values())
    span = end - start
    idle = sorted((s, e) for r in runs.values() for s, e, t in r if t == "<idle>")
    idle_share = sum(e - s for s, e in idle) / (span * len(runs))

    def waited(prefix):
        w = sorted(iv for t, ivs in waits.items() if t.startswith(prefix) for iv in ivs)
        return overlap(idle, w) / span * 1000, len(w)

    p_ms, p_wakeups = waited(proxy)
    w_ms, _ = waited("wrk")
    n_ms, _ = waited("nginx")
    print(
        "| %s | %.1f%% | %.0f ms/s | %.0f ms/s | %.0f ms/s | %.3f |"
        % (label, idle_share * 100, p_ms, w_ms, n_ms, p_wakeups / span / rate)
    )


if __name__ == "__main__":
    main()
