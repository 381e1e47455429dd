"""Shared fixtures: real servers and clients on loopback, and hdrlog run as a user runs it.

Tests marked `kernel` attach real probes. Where they cannot run (not root, no bcc, no usable kernel
headers) they are skipped on a developer machine but FAIL under CI=true: CI is root on the target
machine kind, so a skip there would hide a broken set-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TOKEN_SECRET = "demo-token-9f8e7d6c5b4a"  # the bearer token hdrlog.demo.client sends


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc not importable"
    from hdrlog import preflight

    for check in (preflight.check_tracefs(mount=True), preflight.check_kernel_headers(fix=False)):
        if not check.ok:
            return f"{check.name}: {check.detail}"
    return None


def pytest_collection_modifyitems(config, items):
    kernel_items = [i for i in items if "kernel" in i.keywords]
    if not kernel_items:
        return
    why = _kernel_unavailable()
    if why is None:
        return
    for item in kernel_items:
        if os.environ.get("CI"):
            item.user_properties.append(("kernel_unavailable", why))
        else:
            item.add_marker(pytest.mark.skip(reason=f"real-kernel test: {why}"))


@pytest.fixture(autouse=True)
def _fail_kernel_tests_in_ci(request):
    for k, v in request.node.user_properties:
        if k == "kernel_unavailable":
            pytest.fail(f"real-kernel tests must run in CI, but: {v}")


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    from hdrlog.demo.certs import make_cert

    return make_cert(tmp_path_factory.mktemp("certs"))


class Proc:
    """A started process that is always stopped at the end of the test."""

    def __init__(self, argv, **kw):
        self.argv = argv
        self.p = subprocess.Popen(argv, **kw)
        self.pid = self.p.pid

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def start_server(start, argv, **kw) -> tuple:
    """Start a server that prints "listening PORT" on stdout when ready; (process, port).

    ``start`` is the ``procs`` fixture (the process is a :class:`Proc`, stopped after the test) or, in scripts
    such as record_fixtures.py, ``subprocess.Popen``."""
    srv = start(argv, stdout=subprocess.PIPE, text=True, **kw)
    line = getattr(srv, "p", srv).stdout.readline()
    assert line.startswith("listening "), f"{argv[0]} did not start: {line!r}"
    return srv, int(line.split()[1])


def start_gateway(start, certs, *extra: str) -> tuple:
    """hdrlog's demo HTTPS gateway (hdrlog.demo.gateway) with the test certificate; (process, port)."""
    cert, key = certs
    return start_server(start, [sys.executable, "-m", "hdrlog.demo.gateway", "--cert", cert, "--key", key, *extra])


@pytest.fixture
def gateway(procs, certs):
    """The demo gateway, started for this test: (process, port)."""
    return start_gateway(procs, certs)


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(argv, **kw) -> Proc:
        pr = Proc(argv, **kw)
        started.append(pr)
        return pr

    yield start
    for pr in reversed(started):
        pr.stop()


class Hdrlog:
    """`hdrlog attach` run as a subprocess, exactly as a user runs it."""

    def __init__(self, procs, tmp_path: Path, pids: list[int], extra=(), timeout: float = 60):
        self.out = tmp_path / f"hdrlog-{pids[0]}.jsonl"
        self.err = tmp_path / f"hdrlog-{pids[0]}.err"
        argv = [sys.executable, "-m", "hdrlog", "attach", "--output", str(self.out), *extra]
        for p in pids:
            argv += ["--pid", str(p)]
        self.errf = open(self.err, "w")
        self.proc = procs(argv, stdout=subprocess.DEVNULL, stderr=self.errf, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while "attached" not in self.stderr():
            if self.proc.p.poll() is not None:
                raise AssertionError(f"hdrlog exited {self.proc.p.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hdrlog did not attach in {timeout}s: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    def stop(self, settle: float = 0.5) -> list[dict]:
        time.sleep(settle)
        self.proc.stop(signal.SIGINT, timeout=15)
        self.errf.close()
        assert self.proc.p.returncode == 0, f"hdrlog exit {self.proc.p.returncode}: {self.stderr()}"
        return self.records()

    def raw(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.raw().splitlines() if line.strip()]


@pytest.fixture
def hdrlog(procs, tmp_path):
    def start(*pids, extra=()):
        return Hdrlog(procs, tmp_path, list(pids), extra=extra)

    return start


def http_records(records, **match):
    return [r for r in records if r.get("type") == "http" and all(r.get(k) == v for k, v in match.items())]


def header(rec: dict, name: str) -> str | None:
    for n, v in rec["headers"]:
        if n.lower() == name.lower():
            return v
    return None


def run_client(port: int, tag: str, requests: int = 7, connections: int = 2, host: str = "127.0.0.1",
               **kw) -> list[dict]:
    """hdrlog.demo.client against a server: returns [{"local_port", "requests"}] per connection."""
    r = subprocess.run(
        [sys.executable, "-m", "hdrlog.demo.client", "--host", host, "--port", str(port), "--tag", tag,
         "--requests", str(requests), "--connections", str(connections)],
        capture_output=True, text=True, timeout=60, **kw,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx")


class RecordSink:
    """A pipeline sink that keeps every record as the JSON-lines writer would print it (through orjson)."""

    def __init__(self):
        self.records: list[dict] = []

    def write(self, rec):
        import orjson

        self.records.append(orjson.loads(orjson.dumps(rec)))

    def flush(self):
        pass


class LinesSink:
    """A pipeline sink that keeps every record as the JSON line orjson makes of it (bytes, for exact comparisons)."""

    def __init__(self):
        self.lines: list[bytes] = []

    def write(self, rec) -> None:
        import orjson

        self.lines.append(orjson.dumps(rec))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def python_without_bcc() -> str | None:
    """The first `python3` on PATH (pyenv's here) if it is not Debian's and cannot import bcc."""
    p = shutil.which("python3")
    if not p or os.path.realpath(p).startswith("/usr/bin/"):
        return None
    r = subprocess.run([p, "-c", "import bcc"], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    return None if r.returncode == 0 else p
