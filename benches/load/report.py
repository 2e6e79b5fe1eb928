#!/usr/bin/env python3
"""Turn the raw results of benches/load/run.sh into Markdown tables and a plot.

Reads WORK/results.jsonl (one line per case, pointing at the raw wrk output or
openloop JSON), WORK/machine.json and WORK/command.txt; rewrites the part
of OUT between the RESULTS markers (or the whole file when it has none) and
writes PLOT_DIR/latency.png (matplotlib) or PLOT_DIR/latency.svg (by hand,
when matplotlib is missing). Also copies the raw per-case summary to
PLOT_DIR/results.json so the numbers stay with the tables.
"""

import argparse
import datetime
import json
import statistics
import math
import os
import re
import sys

from nodelogs import visitor_requests

BEGIN = "<!-- BEGIN RESULTS: written by benches/load/report.py, do not edit by hand -->"
END = "<!-- END RESULTS -->"

METHOD_LABEL = {
    "wc-busyness": "webcluster busyness",
    "wc-round_robin": "webcluster round_robin",
    "wc-least_inflight": "webcluster least_inflight",
    "wc-busyness-ka": "webcluster busyness, upstream keep-alive on",
    "wc-round_robin-ka": "webcluster round_robin, upstream keep-alive on",
    "wc-least_inflight-ka": "webcluster least_inflight, upstream keep-alive on",
    "nginx-least_conn": "nginx least_conn",
    "nginx-round_robin": "nginx round robin",
    "haproxy-leastconn": "HAProxy leastconn",
    "haproxy-roundrobin": "HAProxy roundrobin",
}
SCENARIO_LABEL = {
    "hidden": "hidden load on n1",
    "equal": "all nodes equal (no hidden load)",
    "full": "hidden load fills every worker of n1",
    "flap": "hidden load fills n1 but frees a worker now and then",
    "freeze": "n1 frozen (SIGSTOP) for a few seconds mid-run, then thawed",
}
PROXY_LABEL = {"direct": "direct (no proxy)", "nginx": "nginx", "haproxy": "HAProxy",
               "webcluster": "webcluster",
               "webcluster-full": "webcluster, everything on",
               "baseline": "baseline",
               "baseline-full": "baseline, everything on"}
# Overhead rows whose instructions per request the "instructions" part
# counted: (callgrind label, mode).
INSTR_OF = {"webcluster": ("webcluster", "bare"), "webcluster-full": ("webcluster", "full"),
            "baseline": ("baseline", "bare"), "baseline-full": ("baseline", "full")}


def proxy_label(kind, machine=None):
    label = PROXY_LABEL.get(kind, kind)
    base = (machine or {}).get("baseline_label")
    if kind.startswith("baseline") and base:
        label = label.replace("baseline", "baseline %s" % base, 1)
    return label


def instructions(rows):
    """(label, mode, size) -> instructions per request, from the instructions part."""
    return {(r["label"], r["mode"], r["size"]): r["ir_per_request"]
            for r in rows if r["part"] == "instructions"}


def wrk_ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", tok)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(path):
    out = {"rps": None, "p50": None, "p75": None, "p90": None, "p99": None, "requests": None,
           "errors": 0, "non2xx": 0}
    try:
        text = open(path).read()
    except OSError:
        return out
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"(50|75|90|99)%\s+(\S+)", s)
        if m:
            out["p" + m.group(1)] = wrk_ms(m.group(2))
        m = re.match(r"Requests/sec:\s+([\d.]+)", s)
        if m:
            out["rps"] = float(m.group(1))
        m = re.match(r"(\d+) requests in", s)
        if m:
            out["requests"] = int(m.group(1))
        m = re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
        if m:
            out["errors"] = sum(int(x) for x in m.groups())
        m = re.match(r"Non-2xx or 3xx responses: (\d+)", s)
        if m:
            out["non2xx"] = int(m.group(1))
    return out


def fmt_ms(v):
    if v is None:
        return "—"
    if v >= 1000:
        return "%.2f s" % (v / 1000)
    if v >= 100:
        return "%.0f ms" % v
    if v >= 10:
        return "%.1f ms" % v
    return "%.2f ms" % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "%.2f" % (a / b)


def load(work):
    rows = []
    with open(os.path.join(work, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    machine = json.load(open(os.path.join(work, "machine.json")))
    command = open(os.path.join(work, "command.txt")).read().strip()
    return rows, machine, command


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    k = len(vals) // 2
    return vals[k] if len(vals) % 2 else (vals[k - 1] + vals[k]) / 2.0


def overhead_section(rows, machine=None):
    ov = [r for r in rows if r["part"] == "overhead"]
    if not ov:
        return [], {}
    ir = instructions(rows)
    for r in ov:
        r.update(parse_wrk(r["wrk"]))
        ticks = r.get("cpu_ticks", 0) / float(r.get("clk_tck", 100))
        reqs = r.get("requests") or 0
        r["cpu_us_per_req"] = (ticks * 1e6 / reqs) if reqs else None
        r["rss_mib"] = r["rss_kb"] / 1024.0 if r.get("rss_kb") else None
    # One row per (size, proxy, threads): medians over the repetitions.
    cases = []
    keys = []
    for r in ov:
        k = (r["size"], r["proxy"], r["threads"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        reps = [r for r in ov if (r["size"], r["proxy"], r["threads"]) == k]
        c = {"size": k[0], "proxy": k[1], "threads": k[2], "n": len(reps)}
        for f in ("rps", "p50", "p99", "cpu_us_per_req"):
            c[f] = median([r[f] for r in reps])
        c["rss_mib"] = max((r["rss_mib"] or 0) for r in reps) or None
        rps = [r["rps"] for r in reps if r["rps"]]
        c["rps_range"] = (min(rps), max(rps)) if rps else None
        c["errors"] = sum(r["errors"] + r["non2xx"] for r in reps)
        cases.append(c)
    lines = []
    summary = {}
    sizes = []
    for c in cases:
        if c["size"] not in sizes:
            sizes.append(c["size"])
    reps_n = max(c["n"] for c in cases)
    for size in sizes:
        lines.append("")
        lines.append("#### %s response" % ("64 KiB" if size == "64k" else "small (96-byte)" if size == "small" else size))
        lines.append("")
        lines.append("| proxy | workers | req/s | req/s range | req/s × nginx / × HAProxy | p50 | p50 × nginx / × HAProxy "
                     "| p99 | p99 × nginx / × HAProxy | peak RSS | RSS × nginx / × HAProxy "
                     "| CPU per request | instructions per request (callgrind, 1 thread) | errors |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        sc = [c for c in cases if c["size"] == size]
        for r in sc:
            ng = next((c for c in sc if c["proxy"] == "nginx" and c["threads"] == r["threads"]), None)
            hp = next((c for c in sc if c["proxy"] == "haproxy" and c["threads"] == r["threads"]), None)
            direct = r["proxy"] == "direct"

            def pair(key):
                if direct:
                    return "—"
                return "%s / %s" % (ratio(r[key], ng and ng[key]), ratio(r[key], hp and hp[key]))

            instr = ir.get(INSTR_OF.get(r["proxy"], ("", ""))[:2] + (size,))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                proxy_label(r["proxy"], machine),
                "1 (upstream)" if direct else r["threads"],
                "%.0f" % r["rps"] if r["rps"] else "—",
                "%.0f–%.0f" % r["rps_range"] if r["rps_range"] else "—",
                pair("rps"),
                fmt_ms(r["p50"]), pair("p50"),
                fmt_ms(r["p99"]), pair("p99"),
                "%.1f MiB" % r["rss_mib"] if r["rss_mib"] else "—",
                pair("rss_mib"),
                "%.1f µs" % r["cpu_us_per_req"] if r["cpu_us_per_req"] else "—",
                "%d" % instr if instr is not None else "—",
                r["errors"],
            ))
            if r["proxy"] == "webcluster":
                summary[(size, r["threads"])] = {
                    "rps_ng": r["rps"] / ng["rps"] if ng and ng["rps"] and r["rps"] else None,
                    "rps_hp": r["rps"] / hp["rps"] if hp and hp["rps"] and r["rps"] else None,
                    "p99_ng": r["p99"] / ng["p99"] if ng and ng["p99"] and r["p99"] else None,
                    "p99_hp": r["p99"] / hp["p99"] if hp and hp["p99"] and r["p99"] else None,
                }
        lines.extend(cores_note([r for r in ov if r["size"] == size]))
        for mode, new, old in (("bare", "webcluster", "baseline"), ("everything on", "webcluster-full", "baseline-full")):
            for n in sorted({c["threads"] for c in sc}):
                a = next((c for c in sc if c["proxy"] == new and c["threads"] == n), None)
                b = next((c for c in sc if c["proxy"] == old and c["threads"] == n), None)
                if not a or not b:
                    continue
                ia = ir.get(INSTR_OF[new] + (size,))
                ib = ir.get(INSTR_OF[old] + (size,))
                lines.append("")
                lines.append("This build ÷ the baseline, %s, %d worker(s): req/s %s, p99 %s, CPU per request %s, "
                             "instructions per request %s." % (
                                 mode, n, ratio(a["rps"], b["rps"]), ratio(a["p99"], b["p99"]),
                                 ratio(a["cpu_us_per_req"], b["cpu_us_per_req"]),
                                 ratio(ia, ib) if ia is not None and ib is not None else "—"))
    lines.insert(0, "")
    if reps_n > 1:
        lines.insert(1, "Each case ran %d times, interleaved (every case once, then again); req/s, p50, p99 and CPU "
                        "per request are medians, peak RSS the largest, errors the sum." % reps_n)
    else:
        lines.insert(1, "Each case ran once.")
    return lines, summary


def cores_note(rows):
    """A sentence on where each worker count's processes ran (run.sh's PIN
    and AFFINITY): "PROXY-CPUS/GENERATOR-CPUS" or "shared" per row, and
    whether the workers were pinned one per core; runs before the
    fifteenth (seventeenth) session recorded none."""
    by = {}
    pinned = {}
    for r in rows:
        if r["proxy"] != "direct" and "cores" in r:
            by.setdefault(r["threads"], set()).add(r["cores"])
            pinned.setdefault(r["threads"], set()).add(r.get("affinity", 0))
    parts = []
    for n in sorted(by):
        cores = sorted(by[n])
        if cores == ["shared"]:
            part = "%d worker(s): the proxy, wrk and the upstream share all cores" % n
            if pinned[n] == {1}:
                part += (", each proxy's workers one per core by its own setting (`AFFINITY`: "
                         "nginx `worker_cpu_affinity auto`, HAProxy `cpu-map`, webcluster "
                         "`cpu_affinity = \"auto\"`)")
            elif 1 in pinned[n]:
                part += ", some runs with each proxy's workers one per core (`AFFINITY`)"
            parts.append(part)
        elif len(cores) == 1:
            proxy, gen = cores[0].split("/")
            parts.append("%d worker(s): the proxy on CPU %s, wrk and the upstream on CPU %s "
                         "(the direct row: wrk and the upstream on CPU %s)" % (n, proxy, gen, gen))
        else:
            parts.append("%d worker(s): mixed (%s)" % (n, ", ".join(cores)))
    if not parts:
        return []
    note = "Cores (`PIN`): " + "; ".join(parts) + "."
    polls = sorted({r.get("halt_poll_ns") for r in rows if r.get("halt_poll_ns")})
    if polls:
        note += (" Idle vCPUs polled for %s ns before halting (`guest_halt_poll_ns`, `HALT_POLL_NS`)."
                 % " / ".join(polls))
    ccs = sorted({r.get("tcp_cc") for r in rows if r.get("tcp_cc")})
    if ccs:
        note += " TCP congestion control: %s (`TCP_CC`)." % " / ".join(ccs)
    return ["", note]


def idle_section(rows, machine=None):
    rs = [r for r in rows if r["part"] == "idle"]
    if not rs:
        return []
    n = rs[0]["conns"]
    lines = ["", "### Idle keep-alive connections", "",
             "Each proxy with 1 worker; `idleconns.py` opens %d visitor connections, one keep-alive request "
             "on each, and holds them idle. Peak RSS (VmHWM; nginx: its worker) once all are open." % n, "",
             "| proxy | connections open | failed | RSS before | peak RSS | per connection | × nginx / × HAProxy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by = {r["proxy"]: r for r in rs}
    for r in rs:
        ng, hp = by.get("nginx"), by.get("haproxy")
        per = (r["rss_kb"] - r["rss_before_kb"]) / max(1, r["open"])
        lines.append("| %s | %d | %d | %.1f MiB | %.1f MiB | %.2f KiB | %s / %s |" % (
            proxy_label(r["proxy"], machine), r["open"], r["failed"], r["rss_before_kb"] / 1024.0,
            r["rss_kb"] / 1024.0, per, ratio(per, ng and per_conn(ng)), ratio(per, hp and per_conn(hp))))
    return lines


def per_conn(r):
    return (r["rss_kb"] - r["rss_before_kb"]) / max(1, r["open"])


def instructions_section(rows, machine=None):
    rs = [r for r in rows if r["part"] == "instructions"]
    if not rs:
        return []
    lines = ["", "### Instructions per request", "",
             "`benches/load/callgrind.sh` (valgrind's callgrind; %d requests with `ab -k -c 10`, minus a run "
             "without requests): a count that does not depend on the machine's other load. bare: "
             "round_robin, no scrape, no access log; full: busyness with the upstream's stub_status "
             "scraped every second, the status-path guard and the access log on. %d thread(s)." % (
                 rs[0]["requests"], rs[0].get("threads", 1)), "",
             "| build | mode | response | instructions per request | × the baseline |",
             "| --- | --- | --- | ---: | ---: |"]
    ir = instructions(rows)
    for r in rs:
        base = ir.get(("baseline", r["mode"], r["size"])) if r["label"] != "baseline" else None
        name = "this build" if r["label"] == "webcluster" else proxy_label(r["label"], machine)
        lines.append("| %s | %s | %s | %d | %s |" % (
            name, r["mode"], r["size"], r["ir_per_request"], ratio(r["ir_per_request"], base) if base else "—"))
    return lines


def parse_h2load(path, log_path):
    """h2load's summary (req/s, outcomes, status codes) and, from its
    --log-file (start, status, duration in µs per request), the p99 in ms."""
    out = {"rps": None, "succeeded": 0, "failed": 0, "errored": 0, "non2xx": 0, "p99": None}
    try:
        text = open(path).read()
    except OSError:
        return out
    m = re.search(r"^finished in [0-9.]+\w*, ([0-9.]+) req/s", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text, re.M)
    if m:
        out["succeeded"], out["failed"], out["errored"] = (int(g) for g in m.groups())
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        out["non2xx"] = sum(int(g) for g in m.groups()[1:])
    if log_path:
        try:
            times = sorted(int(l.split()[2]) for l in open(log_path) if len(l.split()) >= 3)
        except (OSError, ValueError):
            times = []
        if times:
            out["p99"] = times[min(len(times) - 1, int(len(times) * 0.99))] / 1000.0
    return out


def proxy_table(summary):
    """Rows of req/s, p99 and CPU per request by proxy, with ratios to
    nginx's and HAProxy's (summary: proxy -> rps, p99, cpu, errors, runs)."""
    ng, hp = summary.get("nginx", {}), summary.get("haproxy", {})
    lines = ["| proxy | req/s | × nginx / × HAProxy | p99 | × nginx / × HAProxy | CPU µs/req | "
             "× nginx / × HAProxy | errors | runs |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for proxy, v in summary.items():
        lines.append("| %s | %s | %s / %s | %s | %s / %s | %s | %s / %s | %d | %d |" % (
            PROXY_LABEL.get(proxy, proxy), "—" if v["rps"] is None else "%.0f" % v["rps"],
            ratio(v["rps"], ng.get("rps")), ratio(v["rps"], hp.get("rps")),
            fmt_ms(v["p99"]), ratio(v["p99"], ng.get("p99")), ratio(v["p99"], hp.get("p99")),
            "—" if v["cpu"] is None else "%.1f" % v["cpu"],
            ratio(v["cpu"], ng.get("cpu")), ratio(v["cpu"], hp.get("cpu")), v["errors"], v["runs"]))
    return lines


def tls_section(rows):
    """Part "tls": TLS termination by each proxy (1 worker, same certificate)."""
    ts = [r for r in rows if r["part"] == "tls"]
    if not ts:
        return []
    lines = ["", "### TLS termination", "",
             "Each proxy with 1 worker terminates TLS with the same ECDSA P-256 certificate in front of "
             "the same upstream nginx; `wrk -t1 -c50 --latency` over HTTPS. New connections: "
             "`-H \"Connection: close\"`, one request per TLS connection (wrk's OpenSSL client, the same "
             "for all three). Medians of the runs; ratios: this row / nginx's, this row / HAProxy's "
             "(req/s: higher is better; p99 and CPU: lower). What each negotiated with OpenSSL's client:"]
    seen = {}
    for r in ts:
        if r.get("cipher") and r["proxy"] not in seen:
            seen[r["proxy"]] = r["cipher"]
    for proxy, cipher in seen.items():
        lines.append("- %s: %s" % (PROXY_LABEL.get(proxy, proxy), cipher))
    titles = {"newconn": "new TLS connection per request", "keepalive": "HTTPS keep-alive"}
    for case in ("newconn", "keepalive"):
        rs = [r for r in ts if r["case"] == case]
        if not rs:
            continue
        summary = {}
        for proxy in dict.fromkeys(r["proxy"] for r in rs):
            runs = [r for r in rs if r["proxy"] == proxy]
            ws = [parse_wrk(r["wrk"]) for r in runs]
            cpu = [r["cpu_ticks"] / r["clk_tck"] * 1e6 / w["requests"]
                   for r, w in zip(runs, ws) if w["requests"]]
            summary[proxy] = {
                "rps": median([w["rps"] for w in ws]),
                "p99": median([w["p99"] for w in ws]),
                "cpu": median(cpu),
                "errors": sum(w["errors"] + w["non2xx"] for w in ws),
                "runs": len(runs),
            }
        lines += ["", "%s:" % titles[case], ""] + proxy_table(summary)
    h2 = [r for r in ts if r["case"] == "h2"]
    if h2:
        summary = {}
        for proxy in dict.fromkeys(r["proxy"] for r in h2):
            runs = [r for r in h2 if r["proxy"] == proxy]
            hs = [parse_h2load(r["h2load"], r.get("h2log")) for r in runs]
            cpu = [r["cpu_ticks"] / r["clk_tck"] * 1e6 / h["succeeded"]
                   for r, h in zip(runs, hs) if h["succeeded"]]
            summary[proxy] = {
                "rps": median([h["rps"] for h in hs]),
                "p99": median([h["p99"] for h in hs]),
                "cpu": median(cpu),
                "errors": sum(h["failed"] + h["errored"] + h["non2xx"] for h in hs),
                "runs": len(runs),
            }
        lines += ["", "HTTP/2 over TLS (`h2load -c50 -m10 -t1`, ALPN h2; p99 from h2load's "
                  "`--log-file`, every request's time):", ""] + proxy_table(summary)
    idle = [r for r in ts if r["case"] == "idle"]
    if idle:
        lines += ["", "%d idle TLS connections (`idleconns.py --tls`: one keep-alive request on each, then "
                  "held); peak RSS (VmHWM; nginx: its worker):" % idle[0]["conns"], "",
                  "| proxy | open | failed | RSS before | peak RSS | per connection | × nginx / × HAProxy |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        by = {r["proxy"]: r for r in idle}
        for r in idle:
            ng, hp = by.get("nginx"), by.get("haproxy")
            per = (r["rss_kb"] - r["rss_before_kb"]) / max(1, r["open"])
            lines.append("| %s | %d | %d | %.1f MiB | %.1f MiB | %.1f KiB | %s / %s |" % (
                PROXY_LABEL.get(r["proxy"], r["proxy"]), r["open"], r["failed"], r["rss_before_kb"] / 1024.0,
                r["rss_kb"] / 1024.0, per, ratio(r["rss_kb"], ng and ng["rss_kb"]),
                ratio(r["rss_kb"], hp and hp["rss_kb"])))
    return lines


def handler_section(rows):
    hs = [r for r in rows if r["part"] == "handler"]
    if not hs:
        return []
    lines = ["", "Handler cost on one idle node (wrk, 12 keep-alive connections, 4 s; "
             "the balancing runs use the Lua handler):", "",
             "| handler | req/s | p50 | p99 |", "| --- | ---: | ---: | ---: |"]
    for r in hs:
        w = parse_wrk(r["wrk"])
        lua = r["handler"] in ("lua", "sleep")
        path = r.get("path") or ("/sleep" if lua else "/cgi-sleep")
        name = ("Lua `%s` (mod_lua, no fork)" if lua else "CGI `%s` (sh, fork + exec per request)") % path
        lines.append("| %s | %s | %s | %s |" % (name, "%.0f" % w["rps"] if w["rps"] else "—",
                                                fmt_ms(w["p50"]), fmt_ms(w["p99"])))
    return lines


BUF_SHORT = {"direct": "direct", "nginx": "nginx", "haproxy": "HAProxy", "webcluster": "webcluster",
             "webcluster-stream": "webcluster streaming"}
BUF_LABEL = {"direct": "direct (no proxy)", "nginx": "nginx (default buffering)",
             "haproxy": "HAProxy (streams)", "webcluster": "webcluster (default buffering)",
             "webcluster-stream": "webcluster, buffering off (streams)"}


def size_label(size):
    return {"16": "16 B", "64k": "64 KiB", "1m": "1 MiB"}.get(size, size)


def buffering_section(rows):
    """Two tables, request bodies (POST) and response bodies (GET): per size
    req/s, p99 and CPU per request of the proxy, with ratios to nginx."""
    bf = [r for r in rows if r["part"] == "buffering"]
    if not bf:
        return []
    for r in bf:
        r.update(parse_wrk(r["wrk"]))
        ticks = r.get("cpu_ticks", 0) / float(r.get("clk_tck", 100))
        reqs = r.get("requests") or 0
        r["cpu_us_per_req"] = (ticks * 1e6 / reqs) if reqs else None
    reps_n = max(r["rep"] for r in bf)
    lines = ["", "### Buffering", "",
             "The cost of buffering bodies: `wrk -t1 -c%s --latency --timeout 10s`, keep-alive, each proxy with "
             "%d worker, one upstream nginx (1 worker) that serves the responses from files and reads every "
             "upload whole before it answers. nginx and webcluster buffer with their defaults (nginx: "
             "`proxy_request_buffering on`, `proxy_buffering on`, %s `client_body_buffer_size`, then "
             "temporary files; webcluster: `[buffering] memory = \"64k\"`, then temporary files); HAProxy and "
             "the \"buffering off\" webcluster stream. Each cell: median req/s, p99 and the proxy's CPU time per "
             "request; in brackets this row ÷ nginx's (req/s: higher is better; p99, CPU: lower)." % (
                 bf[0].get("conns", 50), bf[0].get("threads", 1),
                 "a %s (`BUF_NGINX_BODY_BUFFER`)" % bf[0]["nginx_body_buffer"]
                 if bf[0].get("nginx_body_buffer") else "the default 16 KiB")]
    lines.append("")
    lines.append("Each case ran %d time%s%s." % (
        reps_n, "s" if reps_n > 1 else "",
        ", interleaved; medians" if reps_n > 1 else ""))
    for d, title in (("up", "request bodies (POST, body to the upstream)"),
                     ("down", "response bodies (GET, body from the upstream)")):
        rs = [r for r in bf if r["dir"] == d]
        if not rs:
            continue
        sizes, kinds = [], []
        for r in rs:
            if r["size"] not in sizes:
                sizes.append(r["size"])
            if r["proxy"] not in kinds:
                kinds.append(r["proxy"])
        cell = {}
        for s in sizes:
            for k in kinds:
                reps = [r for r in rs if r["size"] == s and r["proxy"] == k]
                if not reps:
                    continue
                cell[(s, k)] = {
                    "rps": median([r["rps"] for r in reps]),
                    "p99": median([r["p99"] for r in reps]),
                    "cpu": median([r["cpu_us_per_req"] for r in reps]),
                    "errors": sum(r["errors"] + r["non2xx"] for r in reps),
                    "requests": sum(r["requests"] or 0 for r in reps),
                    "whole": sum(r.get("upstream_whole", 0) for r in reps),
                    "chunked": sum(r.get("upstream_chunked", 0) for r in reps),
                }
        lines += ["", "#### Buffering: %s" % title, ""]
        head = "| proxy |"
        rule = "| --- |"
        for s in sizes:
            head += " %s req/s | %s p99 | %s CPU per request |" % ((size_label(s),) * 3)
            rule += " ---: | ---: | ---: |"
        head += " errors |"
        rule += " ---: |"
        lines += [head, rule]
        for k in kinds:
            row = "| %s |" % BUF_LABEL.get(k, k)
            errors = 0
            for s in sizes:
                c = cell.get((s, k))
                ng = cell.get((s, "nginx"))
                if not c:
                    row += " — | — | — |"
                    continue
                errors += c["errors"]
                show_ratio = k not in ("nginx", "direct")

                def with_ratio(text, key):
                    if not show_ratio:
                        return text
                    return "%s (%s)" % (text, ratio(c[key], ng and ng[key]))

                row += " %s | %s | %s |" % (
                    with_ratio("%.0f" % c["rps"] if c["rps"] else "—", "rps"),
                    with_ratio(fmt_ms(c["p99"]), "p99"),
                    with_ratio("%.0f µs" % c["cpu"] if c["cpu"] else "—", "cpu") if k != "direct" else "—")
            row += " %d |" % errors
            lines.append(row)
        wc = [s for s in sizes if cell.get((s, "webcluster")) and cell.get((s, "webcluster-stream"))]
        if wc:
            parts = []
            for s in wc:
                a, b = cell[(s, "webcluster")], cell[(s, "webcluster-stream")]
                parts.append("%s: req/s %s, p99 %s, CPU %s" % (
                    size_label(s), ratio(a["rps"], b["rps"]), ratio(a["p99"], b["p99"]), ratio(a["cpu"], b["cpu"])))
            lines += ["", "The cost of buffering in webcluster (buffered ÷ streaming): " + "; ".join(parts) + "."]
        if d == "up":
            checks = []
            for k in kinds:
                req = sum(cell[(s, k)]["requests"] for s in sizes if (s, k) in cell)
                whole = sum(cell[(s, k)]["whole"] for s in sizes if (s, k) in cell)
                chunked = sum(cell[(s, k)]["chunked"] for s in sizes if (s, k) in cell)
                checks.append("%s %d of %d%s%s" % (
                    BUF_SHORT.get(k, k),
                    min(whole, req), req, "" if whole >= req else " **(short!)**",
                    " (%d chunked)" % chunked if chunked else ""))
            lines += ["", "Uploads the upstream logged as read whole (answered 200, `$content_length` = the size, "
                      "`$request_length` above it; nginx answers only after the last byte), against the "
                      "requests wrk counted: " + ", ".join(checks) + "."]
    return lines


LAG_LIMIT_MS = 10.0


def busy_machine(ol):
    lag = (ol.get("send_lag_ms") or {}).get("p99")
    return lag is not None and lag > LAG_LIMIT_MS


def baseline_section(rows):
    bs = [r for r in rows if r["part"] == "baseline"]
    lines = []
    for r in bs:
        try:
            ol = json.load(open(r["openloop"]))
        except (OSError, ValueError):
            continue
        lat = ol["latency_ms"]
        lines += ["", "The floor, without a proxy: openloop straight to one idle node at a third of the rate "
                  "(%.0f visitors/s, its share), %d requests: p50 %s, p99 %s, p99.9 %s, max %s, %d failed or "
                  "timed out, generator lag p99 %s." % (
                      ol["rate"], ol["sent"], fmt_ms(lat["p50"]), fmt_ms(lat["p99"]), fmt_ms(lat["p99.9"]),
                      fmt_ms(lat["max"]), ol["failed"], fmt_ms(ol["send_lag_ms"]["p99"]))]
    return lines


def balancing_section(rows, handler_ms, handler_p99=None):
    bal = [r for r in rows if r["part"] == "balancing"]
    if not bal:
        return [], {}
    for r in bal:
        try:
            r["ol"] = json.load(open(r["openloop"]))
        except (OSError, ValueError):
            r["ol"] = None
        hw = parse_wrk(r["hidden_wrk"]) if r.get("hidden_workers") else None
        r["hidden_rps"] = hw["rps"] if hw else None
        try:
            r["sampler_data"] = json.load(open(r["sampler"])) if r.get("sampler") else None
        except (OSError, ValueError):
            r["sampler_data"] = None
        r["admin_n1"] = None
        if r.get("admin"):
            try:
                snap = json.load(open(r["admin"]))
                for g in snap.get("groups", []):
                    for n in g.get("nodes", []):
                        if n.get("name") == "n1":
                            r["admin_n1"] = n
            except (OSError, ValueError):
                pass
    scenarios = []
    for r in bal:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    # The target: 1.25 x the handler's own p99 measured in this run, else
    # its nominal time (as in targets_section).
    target = 1.25 * (handler_p99 or handler_ms)
    lines = []
    for sc in scenarios:
        all_runs = [r for r in bal if r["scenario"] == sc and r["ol"]]
        runs = [r for r in all_runs if r.get("rep", 1) == 1]
        if not runs:
            continue
        hidden = runs[0].get("hidden_workers", 0)
        ol0 = runs[0]["ol"]
        lines.append("")
        lines.append("#### %s" % SCENARIO_LABEL.get(sc, sc))
        lines.append("")
        from urllib.parse import urlsplit
        u = urlsplit(ol0["url"])
        lines.append("%d visitors/s for %.0f s (%d requests), `%s?%s`; hidden load on n1: %s." % (
            ol0["rate"], ol0["duration_s"], ol0["sent"], u.path, u.query,
            "%d keep-alive connections from wrk (each holds one of its workers)" % hidden
            if hidden else "none"))
        lines.append("")
        lines.append("| method | ok | failed | timed out (≥ %.0f s) | ≥ 1 s | p50 | p99 | p99.9 | max "
                     "| share n1 / n2 / n3 | p99 ≤ %s | max proxy conns n1 / n2 / n3 | max backlog n1 / n2 / n3 "
                     "| proxy CPU | generator lag p99 |" % (ol0["timeout_s"], fmt_ms(target)))
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: |")
        for r in runs:
            ol = r["ol"]
            lat = ol["latency_ms"]
            ok = ol["ok"]
            shares = " / ".join("%.0f%%" % (100.0 * ol["nodes"].get(n, 0) / ok) if ok else "—"
                                for n in ("n1", "n2", "n3"))
            failed = ol["failed"] - ol["timeouts"]
            cpu = r.get("proxy_cpu_ticks", 0) / float(r.get("clk_tck", 100))
            sd = r.get("sampler_data")
            if sd:
                conns = " / ".join(str(sd["nodes"][n]["proxy_conns_max"]) for n in ("n1", "n2", "n3"))
                backlog = " / ".join(str(sd["nodes"][n]["backlog_max"]) for n in ("n1", "n2", "n3"))
            else:
                conns = backlog = "—"
            lines.append("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %.1f s | %s |" % (
                METHOD_LABEL.get(r["method"], r["method"]), ok, failed, ol["timeouts"], ol["over_1s"],
                fmt_ms(lat["p50"]), fmt_ms(lat["p99"]), fmt_ms(lat["p99.9"]), fmt_ms(lat["max"]),
                shares, "yes" if lat["p99"] is not None and lat["p99"] <= target and ol["failed"] == 0 else "**no**",
                conns, backlog, cpu, fmt_ms(ol["send_lag_ms"]["p99"]) + (" ⚠" if busy_machine(ol) else "")))
        if any(busy_machine(r["ol"]) for r in runs):
            lines.append("")
            lines.append("⚠ openloop itself sent late (p99 lag over %.0f ms): the machine was short of CPU "
                         "during that run (other processes, or the proxy and nodes saturating both cores); its "
                         "tail latencies say more about the machine than about the method." % LAG_LIMIT_MS)
        extra = [r for r in runs if r.get("hidden_rps")]
        notes = []
        if extra:
            notes.append("hidden load served by n1 (req/s): " + ", ".join(
                "%s %.0f" % (METHOD_LABEL.get(r["method"], r["method"]), r["hidden_rps"]) for r in extra))
        sb = runs[0].get("scoreboards_before")
        if sb:
            notes.append("scoreboards of n1 | n2 | n3 just before the load of the first run: `%s`" % sb)
        wcv = [r for r in runs if r.get("sampler_data") and (r["sampler_data"]["nodes"].get("n1") or {}).get("webcluster")]
        if wcv and hidden:
            parts = []
            for r in wcv:
                v = r["sampler_data"]["nodes"]["n1"]["webcluster"]
                if v["scraped_busy_mean"] is None:
                    parts.append("%s: n1 %s for the whole run (its status page did not answer), estimated busy "
                                 "%.1f" % (METHOD_LABEL.get(r["method"], r["method"]), "/".join(v["states"]),
                                           v["estimated_busy_mean"]))
                    continue
                if not v["samples_scraped_full"]:
                    parts.append("%s: scraped busy %s, estimated busy mean %.1f (min %.1f), its last scrape never "
                                 "showed n1 full; states %s" % (
                                     METHOD_LABEL.get(r["method"], r["method"]),
                                     "%.1f" % v["scraped_busy_mean"], v["estimated_busy_mean"],
                                     v["estimated_busy_min"], "/".join(v["states"])))
                    continue
                parts.append("%s: scraped busy %s, estimated busy mean %.1f (min %.1f); in %d of the %d samples "
                             "whose last scrape showed n1 full, webcluster estimated it had an idle worker; states %s" % (
                                 METHOD_LABEL.get(r["method"], r["method"]),
                                 "%.1f" % v["scraped_busy_mean"] if v["scraped_busy_mean"] is not None else "—",
                                 v["estimated_busy_mean"], v["estimated_busy_min"],
                                 v["samples_scraped_full_but_estimated_free"], v["samples_scraped_full"],
                                 "/".join(v["states"])))
            notes.append("webcluster's view of n1 during the run (its status.json sampled every 0.25 s; "
                         "capacity 16): " + "; ".join(parts))
        wc = [r for r in runs if r.get("admin_n1")]
        if wc:
            notes.append("webcluster's view of n1 at the end (status.json): " + "; ".join(
                "%s: state %s, busy %s of %s, estimated busy %.1f" % (
                    METHOD_LABEL.get(r["method"], r["method"]), r["admin_n1"].get("state"),
                    r["admin_n1"].get("busy_workers"), r["admin_n1"].get("capacity"),
                    r["admin_n1"].get("estimated_busy") or 0.0) for r in wc))
        for n in notes:
            lines.append("")
            lines.append("- " + n)
        lines.extend(freeze_table(runs))
        lines.extend(repeats_table(all_runs))
    return lines, {sc: [r for r in bal if r["scenario"] == sc and r["ol"]] for sc in scenarios}


def freeze_table(runs):
    """The freeze scenario: what each method sent to n1 once it was thawed."""
    fr = [r for r in runs if r.get("freeze")]
    if not fr:
        return []
    lines = ["", "n1 frozen (SIGSTOP) mid-run, then thawed (SIGCONT); \"to n1 after the thaw\" counts the "
             "requests n1's access log shows received from the whole second at least 1 s after the thaw "
             "(\"counted from\", after the load began) to the end: requests that waited in its backlog "
             "during the freeze are received at the thaw and are not counted.", "",
             "| method | frozen at | frozen for | counted from | to n1 after the thaw | to n1 in all | ≥ 1 s | timed out |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in fr:
        f, ol = r["freeze"], r["ol"]
        lines.append("| %s | %.1f s | %.1f s | %.1f s | %s | %s | %d | %d |" % (
            METHOD_LABEL.get(r["method"], r["method"]), f["frozen_at_s"], f["frozen_s"], f["after_from_s"],
            "—" if f.get("n1_after_thaw") is None else f["n1_after_thaw"],
            "—" if f.get("n1_requests") is None else f["n1_requests"],
            ol["over_1s"], ol["timeouts"]))
    return lines


def by_method(runs):
    """{method: [openloop result of each run, in order]}, methods in run order."""
    out = {}
    for r in runs:
        out.setdefault(r["method"], []).append(r["ol"])
    return out


def median(vals):
    vals = sorted(vals)
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2.0


def repeats_table(runs):
    """Every run's p99 and the median, when a scenario ran more than once."""
    methods = by_method(runs)
    if max((len(v) for v in methods.values()), default=0) < 2:
        return []
    lines = ["", "Every run of this scenario (`BAL_REPEAT`, interleaved):", "",
             "| method | runs | p99 of each run | median p99 | failed + timed out, all runs |",
             "| --- | ---: | --- | ---: | ---: |"]
    for m, ols in methods.items():
        p99s = [ol["latency_ms"]["p99"] for ol in ols]
        lines.append("| %s | %d | %s | %s | %d |" % (
            METHOD_LABEL.get(m, m), len(ols), ", ".join(fmt_ms(v) for v in p99s), fmt_ms(median(p99s)),
            sum(ol["failed"] for ol in ols)))
    return lines


def targets_section(ov_summary, bal_by_scenario, handler_ms, floor_p99=None, handler_p99=None):
    lines = ["", "#### Issue #6 targets, as measured in this run", ""]
    lines.append("| target | measured | met |")
    lines.append("| --- | --- | :---: |")
    for (size, n), s in sorted(ov_summary.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if n != 1:
            continue
        vals = [s["rps_ng"], s["rps_hp"]]
        met = all(v is not None and v >= 0.8 for v in vals)
        lines.append("| req/s ≥ 0.8 × nginx and HAProxy, 1 worker, %s | %s × nginx, %s × HAProxy | %s |" % (
            size, "%.2f" % vals[0] if vals[0] else "—", "%.2f" % vals[1] if vals[1] else "—",
            "yes" if met else "**no**"))
        vals = [s["p99_ng"], s["p99_hp"]]
        met = all(v is not None and v <= 1.2 for v in vals)
        lines.append("| p99 ≤ 1.2 × nginx and HAProxy, 1 worker, %s | %s × nginx, %s × HAProxy | %s |" % (
            size, "%.2f" % vals[0] if vals[0] else "—", "%.2f" % vals[1] if vals[1] else "—",
            "yes" if met else "**no**"))
    for sc, runs in bal_by_scenario.items():
        methods = by_method(runs)
        ols = methods.get("wc-busyness")
        if not ols:
            continue
        # With BAL_REPEAT: the median p99 and every run's failures.
        n = len(ols)
        p = median([ol["latency_ms"]["p99"] for ol in ols])
        p_label = "p99 %s" % fmt_ms(p) if n == 1 else "median p99 of %d runs %s" % (n, fmt_ms(p))
        failed = sum(ol["failed"] - ol["timeouts"] for ol in ols)
        timeouts = sum(ol["timeouts"] for ol in ols)
        over_1s = sum(ol["over_1s"] for ol in ols)
        if sc in ("hidden", "full", "flap"):
            # The handler's own time: its p99 measured on an idle node in
            # this run (p99 against p99), else the nominal sleep.
            own = handler_p99 or handler_ms
            met = failed + timeouts == 0 and p <= 1.25 * own
            own_label = ("the handler's own p99 on an idle node, %s" % fmt_ms(own) if handler_p99
                         else "the %s handler" % fmt_ms(handler_ms))
            extra = ("; %.2f × the handler's own p99; %.2f × the nominal %s" % (
                p / own, p / handler_ms, fmt_ms(handler_ms)) if handler_p99 else "")
            extra += ("; %.2f × the no-proxy floor's p99 (%s)" % (p / floor_p99, fmt_ms(floor_p99))
                      if floor_p99 else "")
            lines.append("| busyness, %s: no request hangs or fails, p99 ≤ 1.25 × %s (%s) "
                         "| %d failed, %d timed out, %d over 1 s, %s%s | %s |" % (
                             SCENARIO_LABEL.get(sc, sc), own_label, fmt_ms(1.25 * own),
                             failed, timeouts, over_1s, p_label, extra, "yes" if met else "**no**"))
        else:
            peers = {m: median([ol["latency_ms"]["p99"] for ol in v])
                     for m, v in methods.items() if not m.startswith("wc-")}
            if peers:
                best = min(peers, key=peers.get)
                bp = peers[best]
                lines.append("| busyness, all nodes equal: p99 within 5%% of the best peer's "
                             "| %s vs %s (%s), %.2f × | %s |" % (
                                 p_label, fmt_ms(bp), METHOD_LABEL.get(best, best),
                                 p / bp, "yes" if p <= 1.05 * bp and failed + timeouts == 0 else "**no**"))
    return lines


COLORS = {
    "wc-busyness": "#d62728", "wc-round_robin": "#ff9896", "wc-least_inflight": "#e377c2",
    "wc-busyness-ka": "#8c564b",
    "nginx-least_conn": "#2ca02c", "nginx-round_robin": "#98df8a",
    "haproxy-leastconn": "#1f77b4", "haproxy-roundrobin": "#aec7e8",
}


def plot(bal_by_scenario, plot_dir, handler_ms, timeout_s, floor_curve=None):
    scen = [(sc, runs) for sc, runs in bal_by_scenario.items() if runs]
    if not scen:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(scen, plot_dir, handler_ms)
    cols = min(2, len(scen))
    rows_n = (len(scen) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols, 4.2 * rows_n + 0.8), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(scen):]:
        ax.set_visible(False)
    for ax, (sc, runs) in zip(flat, scen):
        for r in runs:
            xs = [1.0 / max(1e-4, 1 - q / 100.0) for q, v in r["ol"]["curve"] if v is not None]
            ys = [v for q, v in r["ol"]["curve"] if v is not None]
            ax.plot(xs, ys, label=METHOD_LABEL.get(r["method"], r["method"]),
                    color=COLORS.get(r["method"]), lw=2 if r["method"] == "wc-busyness" else 1.3)
        if floor_curve:
            xs = [1.0 / max(1e-4, 1 - q / 100.0) for q, v in floor_curve if v is not None]
            ys = [v for q, v in floor_curve if v is not None]
            ax.plot(xs, ys, label="no proxy (one idle node, 1/3 of the rate)", color="black", lw=0.9, ls="-.")
        ax.axhline(1.25 * handler_ms, color="grey", ls="--", lw=0.8)
        ax.text(1.05, 1.25 * handler_ms * 1.08, "1.25 × handler", color="grey", fontsize=7)
        ax.axhline(timeout_s * 1000, color="black", ls=":", lw=0.8)
        ax.text(1.05, timeout_s * 1000 * 1.08, "timeout", fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency from intended send (ms)")
        ax.set_title(SCENARIO_LABEL.get(sc, sc), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)))
    fig.suptitle("Open-loop latency by method, 3 Apache prefork nodes, %d ms handler" % handler_ms,
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.9 / (4.2 * rows_n + 0.8), 1, 1))
    path = os.path.join(plot_dir, "latency.png")
    fig.savefig(path, dpi=110)
    stale = os.path.join(plot_dir, "latency.svg")
    if os.path.exists(stale):
        os.remove(stale)
    return "latency.png"


def plot_svg(scen, plot_dir, handler_ms):
    """The same plot without matplotlib: log-log percentile curves."""
    W, H, pad = 420, 320, 50
    parts = []
    width = W * len(scen)
    parts.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
                 'font-size="10">' % (width, H + 80))
    parts.append('<rect width="100%" height="100%" fill="white"/>')
    ymin, ymax = math.log10(1), math.log10(10000)
    xmax = 4.0
    for k, (sc, runs) in enumerate(scen):
        ox = k * W

        def px(x):
            return ox + pad + (W - pad - 15) * x / xmax

        def py(v):
            v = math.log10(max(1.0, min(10000.0, v)))
            return 20 + (H - 40) * (1 - (v - ymin) / (ymax - ymin))

        parts.append('<text x="%d" y="14" font-size="11">%s</text>' % (ox + pad, SCENARIO_LABEL.get(sc, sc)))
        parts.append('<rect x="%d" y="20" width="%d" height="%d" fill="none" stroke="#999"/>' % (
            px(0), px(xmax) - px(0), H - 40))
        for lab, x in (("0", 0), ("90", 1), ("99", 2), ("99.9", 3), ("99.99", 4)):
            parts.append('<text x="%.0f" y="%d" text-anchor="middle">%s</text>' % (px(x), H - 5, lab))
        for v in (1, 10, 100, 1000, 10000):
            parts.append('<text x="%d" y="%.0f" text-anchor="end">%s</text>' % (px(0) - 4, py(v) + 3,
                                                                              "%g ms" % v))
        parts.append('<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="grey" stroke-dasharray="4"/>' % (
            px(0), px(xmax), py(1.25 * handler_ms), py(1.25 * handler_ms)))
        for j, r in enumerate(runs):
            pts = []
            for q, v in r["ol"]["curve"]:
                if v is None:
                    continue
                x = -math.log10(max(1e-4, 1 - q / 100.0))
                pts.append("%.1f,%.1f" % (px(x), py(v)))
            color = COLORS.get(r["method"], "black")
            parts.append('<polyline fill="none" stroke="%s" stroke-width="%s" points="%s"/>' % (
                color, 2 if r["method"] == "wc-busyness" else 1.2, " ".join(pts)))
            if k == 0:
                parts.append('<text x="%d" y="%d" fill="%s">%s</text>' % (
                    10 + 140 * (j % 3), H + 20 + 14 * (j // 3), color, METHOD_LABEL.get(r["method"], r["method"])))
    parts.append('<text x="10" y="%d">x: percentile, y: latency from intended send (log scales); '
                 'dashed: 1.25 x handler</text>' % (H + 70))
    parts.append("</svg>")
    path = os.path.join(plot_dir, "latency.svg")
    open(path, "w").write("\n".join(parts))
    stale = os.path.join(plot_dir, "latency.png")
    if os.path.exists(stale):
        os.remove(stale)
    return "latency.svg"


def burst_goodput(run_dir, seconds):
    """Visitors' requests the nodes completed per second during the first
    `seconds` of load (from the first visitor request any node began), by
    the nodes' own access logs (docker/apache/node.conf: the duration in
    microseconds fourth from the end, the start last): the
    goodput while the burst of q-overload lasts, whichever order a proxy
    serves its queue in. None without the logs."""
    spans = [(start, end) for _, _, start, end, _ in visitor_requests(run_dir)]
    if not spans:
        return None
    t0 = min(s for s, _ in spans)
    t1 = t0 + seconds
    done = [(b, e) for b, e in spans if e < t1]
    # Worker-seconds spent on visitors' requests within the window, over
    # its length: how many workers were busy with them on average.
    busy = sum(max(0.0, min(e, t1) - max(b, t0)) for b, e in spans) / float(seconds)
    return {
        "goodput": len(done) / float(seconds),
        "busy_workers": busy,
        "handler_ms": 1000.0 * sum(e - b for b, e in done) / len(done) if done else None,
    }


def queue_section(rows, handler_p99):
    """The queue scenarios (issue 17): every generator of each run, with
    what the issue judges: answered (2xx/3xx, or 503) vs hung, p99 of the
    served against the handler's own p99, the nodes' shares."""
    runs = [r for r in rows if r["part"] == "balancing" and str(r.get("scenario", "")).startswith("q-")]
    if not runs:
        return []
    lines = ["", "### The request queue (issue 17)", "",
             "Each generator of a run on its own line: `after` is the second generator of `q-overload` "
             "(after the burst), `b` the one sending to the second instance in `q-two`. \"503\" are the "
             "answers a full queue or `queue_timeout` gave; \"no answer\" are the visits that timed out "
             "or failed without an HTTP answer (hung in a backlog). p99 is over the served requests%s." % (
                 ", the handler's own p99 was %s ms in this run" % fmt_ms(handler_p99) if handler_p99 else ""),
             "",
             "| scenario | method | generator | rate/s | sent | served | 503 | no answer | p50 served | p99 served | p99 all | shares |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    goodput = {}
    for r in runs:
        gens = [("main", r.get("openloop"))]
        if r.get("openloop_after"):
            gens.append(("after", r["openloop_after"]))
        if r.get("openloop_b"):
            gens.append(("b", r["openloop_b"]))
        for name, path in gens:
            try:
                ol = json.load(open(path))
            except (OSError, ValueError, TypeError):
                lines.append("| %s | %s | %s | | | | | | | | | (no result) |" % (r["scenario"], r["method"], name))
                continue
            st = ol.get("statuses", {})
            n503 = st.get("503", 0)
            no_answer = ol.get("timeouts", 0) + sum((ol.get("errors") or {}).values())
            ok = ol.get("ok", 0)
            nodes = ol.get("nodes", {})
            total = sum(nodes.values()) or 1
            shares = ", ".join("%s %.0f%%" % (k, 100.0 * v / total) for k, v in sorted(nodes.items()))
            lat_ok = ol.get("latency_ok_ms", {})
            lines.append("| %s | %s | %s | %.0f | %d | %d | %d | %d | %s | %s | %s | %s |" % (
                r["scenario"], r["method"], name, ol.get("rate", 0), ol.get("sent", 0), ok, n503, no_answer,
                fmt_ms(lat_ok.get("p50")), fmt_ms(lat_ok.get("p99")), fmt_ms(ol.get("latency_ms", {}).get("p99")),
                shares))
            if r["scenario"] == "q-overload" and name == "main":
                g = burst_goodput(os.path.dirname(path), ol.get("duration_s") or 10)
                if g is not None:
                    goodput.setdefault(r["method"], []).append(g)
    if goodput:
        best_peer = max((statistics.median([g["goodput"] for g in v]) for k, v in goodput.items()
                         if not k.startswith("wc-")), default=None)
        lines += ["", "Goodput while the burst of `q-overload` lasts: visitors' requests the nodes completed "
                  "per second from the first one any node began until the burst's end, by the nodes' own "
                  "access logs (median of the runs; whichever order a proxy serves its queue in), with the "
                  "workers busy with visitors' requests on average over that time (of 3 x NODE_WORKERS) and "
                  "the nodes' mean time per request (%D): the workers divided by that time is the most any "
                  "proxy could get:", ""]
        for k, v in goodput.items():
            med = statistics.median([g["goodput"] for g in v])
            lines.append("- %s: %.0f/s (runs: %s)%s; busy workers %s; time per request %s ms" % (
                k, med, ", ".join("%.0f" % g["goodput"] for g in v),
                " = %.3fx the best peer's" % (med / best_peer) if best_peer and k.startswith("wc-") else "",
                ", ".join("%.1f" % g["busy_workers"] for g in v),
                ", ".join("%.2f" % g["handler_ms"] if g["handler_ms"] else "-" for g in v)))
    return lines


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--plot-dir", required=True)
    p.add_argument("--elapsed", type=int, default=0)
    p.add_argument("--handler-ms", type=float, default=20)
    args = p.parse_args()
    rows, m, command = load(args.work)

    ov_lines, ov_summary = overhead_section(rows, m)
    h_lines = handler_section(rows) + baseline_section(rows)
    handler_p99 = None
    for r in rows:
        if r["part"] == "handler" and r["handler"] in ("lua", "sleep"):
            handler_p99 = parse_wrk(r["wrk"])["p99"]
    bal_lines, bal_by = balancing_section(rows, args.handler_ms, handler_p99)
    timeout_s = next((r["ol"]["timeout_s"] for rs in bal_by.values() for r in rs), 5.0)
    floor_curve = None
    for r in rows:
        if r["part"] == "baseline":
            try:
                floor_curve = json.load(open(r["openloop"]))["curve"]
            except (OSError, ValueError, KeyError):
                pass
    first_runs = {sc: [r for r in rs if r.get("rep", 1) == 1] for sc, rs in bal_by.items()}
    plot_file = plot(first_runs, args.plot_dir, args.handler_ms, timeout_s, floor_curve) if bal_by else None

    out = [BEGIN, ""]
    out.append("### Last run")
    out.append("")
    out.append("- started: %s, %d s of load and setup" % (
        m.get("date") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), args.elapsed))
    out.append("- machine: %s CPU(s) (`nproc`), %s, %s RAM, %s, Linux %s; load average when the run started: %s" % (
        m["nproc"], m["cpu"], m["mem"], m["os"], m["kernel"], " ".join(m["loadavg_start"])))
    out.append("- versions: %s; %s; %s; %s; %s; Python %s" % (
        m["webcluster"], m["nginx"], m["haproxy"], m["apache"], m["wrk"], m["python"]))
    out.append("- webcluster binary: built %s; the work tree was at commit %s when the run started%s" % (
        m["webcluster_binary_mtime"], m["webcluster_commit"],
        ("; **the binary is older than the sources** (last change %s)" % m["webcluster_binary_stale"])
        if m.get("webcluster_binary_stale") else " (the binary was newer than every file in src/)"))
    if m.get("baseline_label"):
        out.append("- baseline (BASELINE): %s" % m["baseline_label"])
    out.append("- command: `%s`" % command)
    if ov_lines:
        out.append("")
        out.append("### Proxy overhead")
        out.append("")
        out.append("`wrk -t1 -c50 --latency`, keep-alive, one upstream nginx (1 worker). Ratios: this row / "
                   "nginx's, this row / HAProxy's, with the same number of workers (for req/s higher is better, "
                   "for the others lower). Peak RSS is VmHWM, summed over the worker processes for nginx. "
                   "CPU per request is the proxy's user+system CPU time over the measured requests (less "
                   "sensitive to other load on the machine than req/s).")
        out.extend(ov_lines)
    out.extend(idle_section(rows, m))
    out.extend(instructions_section(rows, m))
    out.extend(buffering_section(rows))
    out.extend(tls_section(rows))
    if bal_lines or h_lines:
        out.append("")
        out.append("### Balancing quality")
        ap = next((r for r in rows if r["part"] == "apache"), None)
        if ap:
            out.append("")
            out.append("Nodes: `%s`, prefork; the handler: `benches/load/sleep.lua` at `%s`." % (
                ap["conf"], ap["lua_path"]))
        out.extend(h_lines)
        out.append("")
        out.append("Latency is from each request's intended send time (open loop, new connection per "
                   "visitor), over all requests: failed ones count at the time they failed, timed-out ones "
                   "at the timeout (so the tail is a lower bound). \"failed\" = errors and non-2xx answers, "
                   "without the timeouts. Shares are of the successful requests. Generator lag is how late "
                   "openloop itself started the visit (its own CPU shortage; included in the latencies).")
        out.extend(bal_lines)
        if plot_file:
            out.append("")
            rel = os.path.relpath(os.path.join(args.plot_dir, plot_file),
                                  os.path.dirname(os.path.abspath(args.out)))
            out.append("![latency by method](%s)" % rel)
    floor_p99 = None
    for r in rows:
        if r["part"] == "baseline":
            try:
                floor_p99 = json.load(open(r["openloop"]))["latency_ms"]["p99"]
            except (OSError, ValueError, KeyError):
                pass
    out.extend(queue_section(rows, handler_p99))
    tl = targets_section(ov_summary, bal_by, args.handler_ms, floor_p99, handler_p99)
    if len(tl) > 5:
        out.append("")
        out.extend(tl)
    out.append("")
    out.append(END)
    block = "\n".join(out)

    try:
        text = open(args.out).read()
    except OSError:
        text = ""
    if BEGIN in text and END in text:
        pre = text[:text.index(BEGIN)]
        post = text[text.index(END) + len(END):]
        text = pre + block + post
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmarks\n\n") + block + "\n"
    with open(args.out, "w") as f:
        f.write(text)

    cases = []
    for r in rows:
        c = {k: v for k, v in r.items()
             if k not in ("wrk", "openloop", "hidden_wrk", "admin", "ol", "sampler", "admin_n1")}
        if r.get("ol"):
            c["openloop"] = {k: v for k, v in r["ol"].items() if k != "curve"}
        cases.append(c)
    with open(os.path.join(args.plot_dir, "results.json"), "w") as f:
        json.dump({"machine": m, "command": command, "cases": cases}, f, indent=1, default=str)
    print("report: %s%s" % (args.out, (", plot: " + plot_file) if plot_file else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
