#!/usr/bin/env python3
"""Open N keep-alive client connections, one request on each, and hold them.

For benches/load/run.sh's "idle" part: the proxy's peak memory with many idle
keep-alive visitors. Each connection sends one `GET PATH` (keep-alive), reads
the whole response (Content-Length) and then stays open and idle. When all
are open (or failed) it prints one line `ready OPEN FAILED` to stdout, holds
them for --hold seconds and exits. With --tls the connections are HTTPS
(TLS handshake first, the certificate not checked). stdlib only.
"""

import argparse
import asyncio
import resource
import ssl
import sys


async def open_one(host, port, request, conns, sem, tls):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), 10)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                writer.close()
                return False
            conns.append(writer)
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            return False


async def main_async(args):
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: idleconns.py\r\n\r\n"
               % (args.path, args.host, args.port)).encode()
    conns = []
    sem = asyncio.Semaphore(args.parallel)
    tls = None
    if args.tls:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])
    results = await asyncio.gather(*(open_one(args.host, args.port, request, conns, sem, tls)
                                     for _ in range(args.conns)))
    ok = sum(1 for r in results if r)
    print("ready %d %d" % (ok, len(results) - ok), flush=True)
    await asyncio.sleep(args.hold)
    for w in conns:
        w.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/small")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=200, help="connections being opened at once")
    p.add_argument("--hold", type=float, default=3.0, help="seconds to hold them once open")
    p.add_argument("--tls", action="store_true", help="HTTPS: a TLS handshake on each connection first")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.conns + 100 > hard:
        sys.exit("idleconns.py: open-files limit %d is too low for %d connections" % (hard, args.conns))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
