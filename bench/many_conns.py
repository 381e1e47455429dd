#!/usr/bin/env python3
"""Hold many TLS connections open to a server (bench use: hdrlog's RSS with 10,000 connections tracked).

  python bench/many_conns.py --port PORT --conns 10000 [--parallel 256]

Opens --conns TLS connections to 127.0.0.1:PORT, sends one keep-alive GET on each and reads its response,
then prints one JSON line {"event": "open", "ok": N, "errors": E, "seconds": S, ...} and keeps them all
open. A line "close" on stdin closes them all (TLS close_notify, then the socket) and prints
{"event": "closed", ...}; end of stdin does the same. Raises RLIMIT_NOFILE for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hdrlog-bench-many-conns\r\n\r\n"


async def open_one(port: int, ctx: ssl.SSLContext, sem: asyncio.Semaphore, conns: list, errors: list) -> None:
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 30)
            w.write(REQUEST)
            await w.drain()
            buf = b""
            while b"\r\n\r\n" not in buf or not buf.endswith(b"ok\n"):
                chunk = await asyncio.wait_for(r.read(4096), 30)
                if not chunk:
                    raise ConnectionError("closed by server")
                buf += chunk
            conns.append(w)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(type(exc).__name__ + ": " + str(exc))


async def close_one(w: asyncio.StreamWriter, sem: asyncio.Semaphore) -> None:
    async with sem:
        w.close()
        try:
            await asyncio.wait_for(w.wait_closed(), 10)
        except Exception:  # noqa: BLE001 - the peer may already be gone
            pass


def emit(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


async def main_async(a) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sem = asyncio.Semaphore(a.parallel)
    conns: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(a.port, ctx, sem, conns, errors) for _ in range(a.conns)))
    emit(event="open", ok=len(conns), errors=len(errors), first_errors=errors[:3],
         seconds=round(time.monotonic() - t0, 3))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "close" or EOF
    t0 = time.monotonic()
    await asyncio.gather(*(close_one(w, sem) for w in conns))
    emit(event="closed", closed=len(conns), seconds=round(time.monotonic() - t0, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256)
    a = ap.parse_args()
    want = a.conns + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
