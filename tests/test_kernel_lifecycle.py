"""Real-kernel tests of an attach session's life: how it stops, that it leaves nothing behind, how it
follows process trees, and what it does with big, truncated, lost, secret and IPv6 traffic.

"Nothing left attached" is checked where a left-over uprobe would show: bcc's tracefs events
(uprobe_events) and, above all, the target's own code. A uprobe is an int3 written into the traced
process's copy of the library's text, so the executable mapping of libssl in the target's memory
(/proc/PID/mem) differs from the file while hdrlog is attached and must equal it again afterwards.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import TOKEN_SECRET, free_port, header, http_records, nginx_available, run_client, wait_port

pytestmark = pytest.mark.kernel

SECRETS = (TOKEN_SECRET, "k-1234567890abcdef", "s3cr3t-session")  # what hdrlog.demo.client sends


# ------------------------------------------------------------------------------------------ helpers
class Run:
    """`hdrlog attach` as a user runs it (like conftest.Hdrlog, but any output path, stdout or file)."""

    def __init__(self, procs, tmp_path: Path, pids, extra=(), name="hdrlog", output=True, wait=True):
        self.out = tmp_path / f"{name}.jsonl" if output else None
        self.err = tmp_path / f"{name}.err"
        argv = [sys.executable, "-m", "hdrlog", "attach", *extra]
        if output:
            argv += ["--output", str(self.out)]
        for p in pids:
            argv += ["--pid", str(p)]
        self.errf = open(self.err, "w")
        self.proc = procs(argv, stdout=subprocess.DEVNULL if output else subprocess.PIPE, stderr=self.errf,
                          stdin=subprocess.DEVNULL)
        self.p = self.proc.p
        self.pid = self.p.pid
        if wait:
            self.ready()

    def ready(self, timeout=60) -> "Run":
        """Wait for the `attached` line (sessions started with wait=False compile in parallel)."""
        deadline = time.monotonic() + timeout
        while "attached" not in self.stderr():
            if self.p.poll() is not None:
                raise AssertionError(f"hdrlog exited {self.p.returncode}: {self.stderr()}")
            assert time.monotonic() < deadline, f"hdrlog did not attach in {timeout}s: {self.stderr()}"
            time.sleep(0.05)
        self.attached_at = time.monotonic()
        return self

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    def signal(self, sig, settle=0.5) -> int:
        time.sleep(settle)
        self.p.send_signal(sig)
        return self.wait()

    @staticmethod
    def stop_all(*runs: "Run", settle=0.5) -> list[int]:
        """SIGINT several sessions at once (detaching takes a while; they do it in parallel)."""
        time.sleep(settle)
        for r in runs:
            r.p.send_signal(signal.SIGINT)
        return [r.wait() for r in runs]

    def wait(self, timeout=15) -> int:
        rc = self.p.wait(timeout)
        self.errf.close()
        return rc

    def records(self) -> list[dict]:
        text = self.out.read_text() if self.out and self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_for(self, pred, what: str, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not pred():
            assert self.p.poll() is None, f"hdrlog exited {self.p.returncode} waiting for {what}: {self.stderr()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s: {self.stderr()}"
            time.sleep(0.05)


def gateways(procs, certs, n=1, host="127.0.0.1"):
    """n demo gateways (Python ssl), started together: [(proc, port), ...]."""
    cert, key = certs
    gws = [procs([sys.executable, "-m", "hdrlog.demo.gateway", "--cert", cert, "--key", key, "--host", host],
                 stdout=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for gw in gws:
        line = gw.p.stdout.readline()
        assert line.startswith("listening "), line
        out.append((gw, int(line.split()[1])))
    return out


def gateway(procs, certs, host="127.0.0.1"):
    return gateways(procs, certs, 1, host)[0]


def https(port: int, host="127.0.0.1") -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    c.connect()
    return c


def call(c: http.client.HTTPSConnection, method: str, path: str, body=None, headers=None) -> int:
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    r.read()
    return r.status


def ssl_text(pid: int) -> tuple[int, int, int, str]:
    """(start, end, file offset, path) of the executable mapping of libssl in pid."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and "x" in parts[1] and "libssl.so" in parts[5]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            return start, end, int(parts[2], 16), parts[5]
    raise AssertionError(f"no executable libssl mapping in {pid}")


_CONTROL: subprocess.Popen | None = None


def control_pid() -> int:
    """An idle Python that maps the same libssl and that no hdrlog ever attaches to: a byte patched in it too
    is another tool's system-wide uprobe (bench/nginx_bench.py's bpftrace condition puts int3 on SSL_read and
    SSL_write in every process mapping libssl), not one hdrlog left."""
    global _CONTROL
    if _CONTROL is None or _CONTROL.poll() is not None:
        _CONTROL = subprocess.Popen([sys.executable, "-c", "import ssl, sys; print('ready', flush=True); sys.stdin.read()"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert _CONTROL.stdout.readline().strip() == "ready"
        atexit.register(_CONTROL.kill)
    return _CONTROL.pid


def _text_bytes(pid: int) -> tuple[bytes, bytes, int]:
    """(libssl's executable mapping in pid's memory, the same range of the file, its file offset)."""
    start, end, off, path = ssl_text(pid)
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as m:
        m.seek(start)
        mem = m.read(end - start)
    with open(f"/proc/{pid}/root{path}", "rb") as f:
        f.seek(off)
        disk = f.read(end - start)
    return mem, disk, off


def foreign_breakpoints() -> set[int]:
    """File offsets of libssl that another tool's system-wide uprobes patch right now (seen in control_pid)."""
    mem, disk, off = _text_bytes(control_pid())
    return {off + i for i, (a, b) in enumerate(zip(mem, disk)) if a != b}


def patched_bytes(pid: int) -> int:
    """Bytes of libssl's code in pid's memory that differ from the file: uprobe breakpoints, those of
    system-wide probes of other tools (also in the control process) excepted."""
    mem, disk, off = _text_bytes(pid)
    n = min(len(mem), len(disk))
    if mem[:n] == disk[:n]:
        return 0
    diff = {off + i for i, (a, b) in enumerate(zip(mem[:n], disk[:n])) if a != b}
    return len(diff - foreign_breakpoints())


def probe_fds(pid: int) -> int:
    """File descriptors that hold uprobes: BPF links (uprobe_multi) or perf events (older kernels)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) in ("anon_inode:bpf_link", "anon_inode:[perf_event]"):
                n += 1
        except OSError:
            pass
    return n


def uprobe_events_of(hdrlog_pid: int) -> list[str]:
    """bcc names tracefs uprobe events ..._bcc_<tracer pid>."""
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        p = Path(d, "uprobe_events")
        if p.exists():
            return [ln for ln in p.read_text().splitlines() if f"bcc_{hdrlog_pid}" in ln]
    return []


def summary_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("hdrlog: detached.")]
    assert len(lines) == 1, err
    return lines[0]


def by_type(records, t):
    return [r for r in records if r["type"] == t]


def assert_clean_stop(h: Run, rc: int, target_pid: int | None, port: int | None):
    """Exit 0, summary on stderr and as the last record, nothing left in the kernel or the target."""
    err = h.stderr()
    assert rc == 0, (rc, err)
    assert "Traceback" not in err
    line = summary_line(err)
    assert re.search(r"\d+ messages \(per pid: .*\); \d+ events, \d+ lost; \d+ truncated messages", line), line
    records = h.records()
    assert records and records[-1]["type"] == "summary", records[-1:]
    assert by_type(records, "attach")
    assert uprobe_events_of(h.pid) == []
    if target_pid is not None:
        assert patched_bytes(target_pid) == 0, "a uprobe breakpoint is still in the target's libssl"
    if port is not None:  # the target still serves, at full speed (no breakpoint left to trap on)
        c = https(port)
        assert call(c, "GET", "/health") == 200
        c.close()
    return records


# ------------------------------------------------------------------------------------ stop reasons
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_on_signal_leaves_nothing_attached(procs, certs, tmp_path, sig):
    gw, port = gateway(procs, certs)
    assert patched_bytes(gw.pid) == 0
    pre = tmp_path / "hdrlog.jsonl"
    if sig == signal.SIGTERM:  # an output file that exists world-readable becomes private
        pre.write_text("")
        pre.chmod(0o644)
    h = Run(procs, tmp_path, [gw.pid])
    assert stat.S_IMODE(os.stat(h.out).st_mode) == 0o600
    err = h.stderr()
    assert f"pid {gw.pid} (python" in err and "libssl.so" in err and "SSL_read" in err and "SSL_write" in err
    assert probe_fds(h.pid) > 0, "uprobes are BPF links (or perf events) held by hdrlog"
    assert patched_bytes(gw.pid) > 0, "while attached, the target's libssl carries breakpoints"
    run_client(port, "sig", requests=3, connections=1)
    records = assert_clean_stop(h, h.signal(sig), gw.pid, port)
    assert len(http_records(records, kind="request")) == 3
    s = records[-1]
    assert s["messages"] == 6 and s["messages_by_pid"] == {str(gw.pid): 6} and s["lost_events"] == 0
    assert f"6 messages (per pid: {gw.pid}: 6)" in summary_line(h.stderr())


def test_stop_after_duration(procs, certs, tmp_path):
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid], extra=("--duration", "2"))
    run_client(port, "dur", requests=2, connections=1)
    rc = h.wait(timeout=10)
    took = time.monotonic() - h.attached_at
    assert 1.5 <= took <= 6, took
    records = assert_clean_stop(h, rc, gw.pid, port)
    assert len(http_records(records, kind="request")) == 2


def _compiler_rss_kb(pid: int) -> int:
    """Resident kB of the compiler's libraries (libLLVM, libclang) in process pid."""
    total, lib = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            lib = bool(re.search(r"/lib(LLVM|clang)", line))
        elif lib and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_the_compilers_memory_is_given_back_once_attached(procs, certs, tmp_path):
    """The session trims what bcc's compile left resident after its `attached` line, not before (memtrim.py):
    the compile touches ~60 MiB of libLLVM/libclang code; what stays is their relocated data (~10 MiB)."""
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid])
    deadline = time.monotonic() + 5
    while (kb := _compiler_rss_kb(h.pid)) > 25_000:
        assert time.monotonic() < deadline, f"{kb} kB of compiler libraries still resident after attaching"
        time.sleep(0.1)
    assert h.signal(signal.SIGINT) == 0, h.stderr()


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_stop_when_every_target_has_exited(procs, certs, tmp_path, reaped):
    """hdrlog ends by itself; a target that is a zombie (not yet waited for by its parent) has exited too."""
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid])
    run_client(port, "exit", requests=2, connections=1)
    time.sleep(0.3)
    gw.p.kill()
    if reaped:
        gw.p.wait()
    t0 = time.monotonic()
    rc = h.wait(timeout=10)
    assert time.monotonic() - t0 < 5
    assert "every target process has exited" in h.stderr()
    records = assert_clean_stop(h, rc, None, None)
    assert [r["pid"] for r in by_type(records, "exit")] == [gw.pid]
    assert len(http_records(records, kind="request")) == 2


def test_sigkill_leaves_nothing_attached(procs, certs, tmp_path):
    """Uprobes are BPF links owned by hdrlog's file descriptors: even a SIGKILL takes them all away."""
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid])
    assert patched_bytes(gw.pid) > 0
    assert h.signal(signal.SIGKILL, settle=0.2) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while patched_bytes(gw.pid):
        assert time.monotonic() < deadline, "breakpoints left in the target after hdrlog was killed"
        time.sleep(0.05)
    assert uprobe_events_of(h.pid) == []
    c = https(port)
    assert call(c, "GET", "/health") == 200
    c.close()


def test_stdout_closed_early_exits_quietly_and_detaches(procs, certs, tmp_path):
    """`hdrlog attach ... | head -3`: when the reader goes, hdrlog detaches and exits 0 without a traceback."""
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid], output=False)
    run_client(port, "head", requests=2, connections=1)
    lines = [h.p.stdout.readline() for _ in range(3)]
    assert all(json.loads(x)["type"] in ("attach", "http") for x in lines)
    h.p.stdout.close()  # head -3 exits
    deadline = time.monotonic() + 10
    while h.p.poll() is None and time.monotonic() < deadline:
        run_client(port, "more", requests=2, connections=1)  # more output: the write hits the closed pipe
        time.sleep(0.2)
    rc = h.wait(timeout=5)
    err = h.stderr()
    assert rc == 0, (rc, err)
    assert "Traceback" not in err and "Exception" not in err and "BrokenPipe" not in err, err
    summary_line(err)
    assert uprobe_events_of(h.pid) == []
    assert patched_bytes(gw.pid) == 0


# -------------------------------------------------------------------------------- process trees
NGINX_CONF = """
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ add_header X-Served-By nginx-test; return 200 "hello\\n"; }}
  }}
}}
"""


def start_nginx(procs, certs, tmp_path) -> tuple:
    """nginx (NGINX_CONF: master + 2 workers, TLS on a free loopback port) in tmp_path; (master Proc, port,
    psutil.Process of the master) once both workers run."""
    cert, key = certs
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, port=port, cert=cert, key=key))
    master = procs(["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    wait_port(port)
    m = psutil.Process(master.pid)
    deadline = time.monotonic() + 10
    while len(m.children()) < 2:
        assert time.monotonic() < deadline, "nginx workers did not start"
        time.sleep(0.05)
    return master, port, m


@pytest.mark.skipif(not nginx_available(), reason="nginx not installed")
def test_nginx_master_covers_workers_started_by_a_reload(procs, certs, tmp_path):
    master, port, m = start_nginx(procs, certs, tmp_path)
    old = {c.pid for c in m.children()}
    h = Run(procs, tmp_path, [master.pid])
    h.wait_for(lambda: all(f"pid {w} (nginx)" in h.stderr() for w in old), "both workers in the attached line")

    os.kill(master.pid, signal.SIGHUP)  # what `nginx -s reload` sends
    new: set[int] = set()

    def reloaded():
        nonlocal new
        new = {c.pid for c in m.children()} - old
        return len(new) >= 2 and all(f"attached to new process {w} (nginx)" in h.stderr() for w in new)

    h.wait_for(reloaded, "new workers attached after the reload", timeout=15)
    h.wait_for(lambda: not (old & {c.pid for c in m.children()}), "old workers gone")
    conns = run_client(port, "ngx", requests=8, connections=4)
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    records = h.records()
    reqs = [r for r in http_records(records, kind="request") if (header(r, "X-Request-Id") or "").startswith("ngx-")]
    assert sorted(header(r, "X-Request-Id") for r in reqs) == sorted(f"ngx-{i}" for i in range(8))
    assert {r["pid"] for r in reqs} <= new, (new, {r["pid"] for r in reqs})
    ports = {c["local_port"] for c in conns}
    assert {int(r["conn"]["peer"].rsplit(":", 1)[1]) for r in reqs} <= ports
    resps = [r for r in http_records(records, kind="response") if r["pid"] in new]
    assert len(resps) >= 8 and all(header(r, "X-Served-By") == "nginx-test" for r in resps)
    assert {r["pid"] for r in by_type(records, "attach")} >= old | new | {master.pid}
    assert set(r["pid"] for r in by_type(records, "exit")) >= old


def test_several_pids_in_one_session(procs, certs, tmp_path):
    (a, pa), (b, pb) = gateways(procs, certs, 2)
    h = Run(procs, tmp_path, [a.pid, b.pid])
    assert f"pid {a.pid} (python" in h.stderr() and f"pid {b.pid} (python" in h.stderr()
    run_client(pa, "aaa", requests=3, connections=1)
    run_client(pb, "bbb", requests=4, connections=2)
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    records = h.records()
    for gw, port, tag, n in ((a, pa, "aaa", 3), (b, pb, "bbb", 4)):
        reqs = [r for r in http_records(records, kind="request") if header(r, "X-Request-Id").startswith(tag)]
        assert len(reqs) == n
        assert {r["pid"] for r in reqs} == {gw.pid}
        assert {r["conn"]["local"] for r in reqs} == {f"127.0.0.1:{port}"}
    assert records[-1]["messages_by_pid"] == {str(a.pid): 6, str(b.pid): 8}
    assert patched_bytes(a.pid) == 0 and patched_bytes(b.pid) == 0


# ----------------------------------------------------------------------- size limits and losses
def test_call_beyond_max_bytes_is_truncated_and_the_next_connection_is_fine(procs, certs, tmp_path):
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid], extra=("--max-bytes", "200"))
    c1 = https(port)
    assert call(c1, "GET", "/big", headers={"X-Request-Id": "big", "X-Big": "b" * 2048}) == 404
    c1.close()
    c2 = https(port)
    assert call(c2, "GET", "/health") == 200
    c2.close()
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    records = h.records()
    big = [r for r in http_records(records, kind="request") if r["path"] == "/big"]
    assert len(big) == 1 and big[0]["truncated"] is True, big
    assert big[0]["method"] == "GET"
    health = http_records(records, kind="request", path="/health")
    assert len(health) == 1 and health[0]["truncated"] is False
    resp = [r for r in http_records(records, kind="response") if (r["request"] or {}).get("path") == "/health"]
    assert len(resp) == 1 and resp[0]["status"] == 200 and resp[0]["truncated"] is False
    assert health[0]["conn"]["id"] == resp[0]["conn"]["id"] != big[0]["conn"]["id"]
    s = records[-1]
    assert s["truncated_messages"] >= 1 and s["truncated_calls"] >= 1
    assert "calls beyond --max-bytes" in summary_line(h.stderr())
    assert not re.search(r" 0 calls beyond --max-bytes", summary_line(h.stderr()))


def test_a_write_larger_than_one_chunk_is_captured_in_chunks_up_to_max_bytes(procs, certs, tmp_path):
    """The gateway echoes X-Request-Id, so a 20 KiB id makes it write a 20 KiB header block in one
    SSL_write_ex: probed on the functions, with --max-bytes 65536 it arrives whole (two 16 KiB chunks), with the
    default 16 KiB it is truncated and said so. At the copy sites (the default placement) --max-bytes counts per
    TLS record, and a record holds at most 16 KiB: the default captures the block whole."""
    gw, port = gateway(procs, certs)
    fn = ("--placement", "functions")
    big = Run(procs, tmp_path, [gw.pid], name="big", extra=("--max-bytes", "65536", *fn), wait=False)
    records = Run(procs, tmp_path, [gw.pid], name="records", wait=False)
    default = Run(procs, tmp_path, [gw.pid], name="default", extra=fn).ready()
    big.ready()
    records.ready()
    rid = "r" * 20480
    c = https(port)
    assert call(c, "GET", "/health", headers={"X-Request-Id": rid}) == 200
    assert call(c, "GET", "/health", headers={"X-Request-Id": "small"}) == 200
    c.close()
    assert Run.stop_all(big, default, records) == [0, 0, 0], big.stderr() + default.stderr() + records.stderr()
    for run in (big, records):
        resp = http_records(run.records(), kind="response")
        assert [header(r, "X-Request-Id") for r in resp] == [rid, "small"]
        assert not any(r["truncated"] for r in resp)
        assert run.records()[-1]["truncated_calls"] == 0
    resp = http_records(default.records(), kind="response")
    assert resp[0]["truncated"] is True and header(resp[0], "X-Request-Id") != rid
    assert default.records()[-1]["truncated_calls"] >= 1
    # the next response on the same connection is whole again
    assert [(r["status"], header(r, "X-Request-Id"), r["truncated"]) for r in resp[1:]] == [(200, "small", False)]


def test_ring_buffer_loss_is_counted_and_reported(procs, certs, tmp_path):
    """A 1-page (4 KiB) ring buffer cannot hold an 8 KiB read: every such event is lost, and said so."""
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid], extra=("--ringbuf-pages", "1"))
    c = https(port)
    for i in range(3):
        assert call(c, "GET", f"/fat/{i}", headers={"X-Fat": "f" * 8192}) == 404
    c.close()
    h.wait_for(lambda: "lost" in h.stderr(), "loss report on stderr")
    assert h.p.poll() is None, "hdrlog keeps running after losing events"
    time.sleep(0.3)
    c = https(port)  # small traffic still fits, and is captured
    assert call(c, "GET", "/health") == 200
    c.close()
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    records = h.records()
    loss = by_type(records, "loss")
    assert loss and sum(r["events"] for r in loss) >= 3 and sum(r["bytes"] for r in loss) >= 3 * 8192
    assert records[-1]["lost_events"] == loss[-1]["total_events"] >= 3
    assert re.search(r"; \d+ events, [1-9]\d* lost;", summary_line(h.stderr()))
    assert re.search(r"lost \d+ events \(\d+ bytes\)", h.stderr())
    assert http_records(records, kind="request", path="/health")
    assert not [r for r in http_records(records, kind="request") if r["path"].startswith("/fat/")]


def test_large_body_does_not_break_pairing_on_the_same_connection(procs, certs, tmp_path):
    gw, port = gateway(procs, certs)
    h = Run(procs, tmp_path, [gw.pid])
    c = https(port)
    body = os.urandom(1 << 20)
    assert call(c, "POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"}) == 201
    assert call(c, "GET", "/health", headers={"X-Request-Id": "after"}) == 200
    assert call(c, "DELETE", "/api/orders/9") == 204
    local_port = c.sock.getsockname()[1]
    c.close()
    assert h.signal(signal.SIGINT, settle=0.8) == 0, h.stderr()
    records = h.records()
    reqs = http_records(records, kind="request")
    resps = http_records(records, kind="response")
    assert [(r["method"], r["path"]) for r in reqs] == [("POST", "/upload"), ("GET", "/health"),
                                                        ("DELETE", "/api/orders/9")]
    assert [(r["status"], r["request"]["method"], r["request"]["path"]) for r in resps] == [
        (201, "POST", "/upload"), (200, "GET", "/health"), (204, "DELETE", "/api/orders/9")]
    assert header(reqs[0], "Content-Length") == str(1 << 20)
    assert len({r["conn"]["id"] for r in reqs + resps}) == 1
    assert reqs[0]["conn"]["peer"] == f"127.0.0.1:{local_port}"
    assert not any(r["truncated"] for r in reqs + resps)
    s = records[-1]
    assert s["lost_events"] == 0 and s["gaps"] == 0 and s["truncated_calls"] == 0


# -------------------------------------------------------------------------------- secrets, IPv6
def test_secrets_never_written_by_default_and_shown_on_request(procs, certs, tmp_path):
    """Two sessions on one gateway at once: the default one redacts, the --show-secrets one does not."""
    gw, port = gateway(procs, certs)
    raw = tmp_path / "raw.events.jsonl"
    quiet = Run(procs, tmp_path, [gw.pid], name="default", extra=("--record-events", str(raw)), wait=False)
    loud = Run(procs, tmp_path, [gw.pid], name="shown", extra=("--show-secrets",)).ready()
    quiet.ready()
    run_client(port, "sec", requests=7, connections=1)
    assert Run.stop_all(quiet, loud) == [0, 0], quiet.stderr() + loud.stderr()
    text, err = quiet.out.read_text(), quiet.stderr()
    for s in SECRETS:
        assert s not in text and s not in err, s
    reqs = http_records(quiet.records(), kind="request")
    assert header(reqs[0], "Authorization").startswith("Bearer <redacted:")
    assert any((header(r, "X-Api-Key") or "").startswith("<redacted:") for r in reqs)
    assert any("session=<redacted:" in (header(r, "Cookie") or "") for r in reqs)
    shown = loud.out.read_text()
    for s in SECRETS:
        assert s in shown, s
        assert s not in loud.stderr()
    assert len(http_records(loud.records(), kind="request")) == len(reqs) == 7
    # the raw event recording holds plaintext (documented): it is private like the output
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600 and stat.S_IMODE(quiet.out.stat().st_mode) == 0o600
    assert patched_bytes(gw.pid) == 0


def test_ipv6_loopback_tuple(procs, certs, tmp_path):
    gw, port = gateway(procs, certs, host="::1")
    h = Run(procs, tmp_path, [gw.pid])
    conns = run_client(port, "v6", requests=4, connections=2, host="::1")
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    records = h.records()
    reqs = http_records(records, kind="request")
    assert len(reqs) == 4
    assert {r["conn"]["local"] for r in reqs} == {f"[::1]:{port}"}
    assert {r["conn"]["peer"] for r in reqs} == {f"[::1]:{c['local_port']}" for c in conns}
    assert all(r["conn"]["attribution"] == "socket" for r in reqs)
