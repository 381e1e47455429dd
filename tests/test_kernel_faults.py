"""Real-kernel faults not covered by test_kernel_lifecycle.py (issue 7): the target exec()s mid-capture
(itself again, a program without TLS, a program with another TLS library) and the target crashes
(SIGSEGV, SIGKILL) in the middle of writing a response."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import http_records
from test_kernel_lifecycle import Run, by_type, summary_line

pytestmark = pytest.mark.kernel

GATEWAY = str(Path(__file__).with_name("exec_gateway.py"))


def start(procs, certs, mode="self"):
    cert, key = certs
    gw = procs(["/usr/bin/python3", GATEWAY, cert, key, mode], stdout=subprocess.PIPE, text=True)
    line = gw.p.stdout.readline()
    assert line.startswith("listening"), line
    return gw, int(line.split()[1])


def get(port: int, path: str) -> str | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5) as r:
            return r.headers.get("X-Gen")
    except Exception:  # the exec/crash paths close the connection early
        return None


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def gens(records, path):
    return [dict((n.lower(), v) for n, v in r["headers"]).get("x-gen")
            for r in http_records(records, kind="response") if (r.get("request") or {}).get("path") == path]


def test_reexec_of_the_same_program_keeps_capturing(procs, certs, tmp_path):
    gw, port = start(procs, certs, "self")
    h = Run(procs, tmp_path, [gw.pid])
    assert get(port, "/a") == "0"
    get(port, "/exec")
    assert wait_for(lambda: get(port, "/probe") == "1")
    assert get(port, "/b") == "1"
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    recs = h.records()
    assert gens(recs, "/a") == ["0"] and gens(recs, "/b") == ["1"]  # uprobes follow the file and the task
    assert not [r for r in by_type(recs, "exit")]  # same program: nothing to re-attach
    assert "Traceback" not in h.stderr()


def test_exec_of_a_program_with_another_tls_library_is_followed(procs, certs, tmp_path):
    gw, port = start(procs, certs, "node")
    h = Run(procs, tmp_path, [gw.pid])
    assert get(port, "/a") == "0"
    get(port, "/exec")
    assert wait_for(lambda: get(port, "/probe") == "node")
    assert wait_for(lambda: "the program it exec'd" in h.stderr())
    assert get(port, "/c") == "node"
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    recs = h.records()
    err = h.stderr()
    assert "exec'd node" in err and "Traceback" not in err, err
    assert [r.get("reason") for r in by_type(recs, "exit")] == ["exec"]
    attach = by_type(recs, "attach")
    assert [a["path"] for a in attach][0].endswith("libssl.so.3") and attach[-1]["comm"] == "node"
    assert gens(recs, "/a") == ["0"] and gens(recs, "/c") == ["node"]


def test_exec_of_a_program_without_tls_keeps_the_session_until_it_exits(procs, certs, tmp_path):
    gw, port = start(procs, certs, "sleep")
    h = Run(procs, tmp_path, [gw.pid])
    assert get(port, "/a") == "0"
    get(port, "/exec")
    assert wait_for(lambda: "exec'd sleep" in h.stderr()), h.stderr()
    assert h.p.poll() is None  # still running: the pid lives on
    gw.p.kill()
    gw.p.wait()
    assert h.wait() == 0
    err = h.stderr()
    assert "every target process has exited" in err and "Traceback" not in err, err
    recs = h.records()
    assert [r.get("reason") for r in by_type(recs, "exit")] == ["exec"]
    assert gens(recs, "/a") == ["0"]
    summary_line(err)


def test_a_process_found_without_tls_is_checked_again_after_it_execs(procs, certs, tmp_path):
    """The gateway execs sh (no TLS: detached, checked, skipped), and sh execs a node https server 2 s later:
    the skipped pid runs another image now, so it is searched again and attached."""
    gw, port = start(procs, certs, "sh-node")
    h = Run(procs, tmp_path, [gw.pid])
    assert get(port, "/a") == "0"
    get(port, "/exec")
    assert wait_for(lambda: "exec'd sh" in h.stderr()), h.stderr()
    assert wait_for(lambda: get(port, "/probe") == "node", timeout=15)
    assert wait_for(lambda: "(node), the program it exec'd" in h.stderr()), h.stderr()
    assert get(port, "/c") == "node"
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    recs = h.records()
    assert "Traceback" not in h.stderr()
    attach = by_type(recs, "attach")
    assert attach[0]["path"].endswith("libssl.so.3") and attach[-1]["comm"] == "node"
    assert gens(recs, "/a") == ["0"] and gens(recs, "/c") == ["node"]


LATE_SSL_PARENT = """
import ssl, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
print("child", child.pid, flush=True)
child.wait()
"""

LATE_SSL_CHILD = """
import socket, sys, time
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(4)
print("listening", ls.getsockname()[1], flush=True)
time.sleep(2.5)  # checked (no libssl mapped yet) and skipped by hdrlog meanwhile
import ssl  # loads libssl now
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
while True:
    c, _ = ls.accept()
    with ctx.wrap_socket(c, server_side=True) as s:
        s.recv(65536)
        s.sendall(b"HTTP/1.1 200 OK\\r\\nX-Gen: late\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
"""


def test_a_child_that_loads_libssl_after_it_was_checked_is_attached(procs, certs, tmp_path):
    """A followed process's child starts without TLS code (checked, skipped) and imports ssl later: its mappings
    changed, so it is searched again and attached."""
    cert, key = certs
    parent = procs(["/usr/bin/python3", "-c", LATE_SSL_PARENT, LATE_SSL_CHILD, cert, key],
                   stdout=subprocess.PIPE, text=True)
    child = int(parent.p.stdout.readline().split()[1])
    try:
        port = int(parent.p.stdout.readline().split()[1])
        h = Run(procs, tmp_path, [parent.pid])
        assert wait_for(lambda: "it had no TLS code when first checked and has now" in h.stderr(), timeout=15), \
            h.stderr()
        assert f"attached to pid {child} (python3)" in h.stderr()
        assert get(port, "/late") == "late"
        assert h.signal(signal.SIGINT) == 0, h.stderr()
        assert gens(h.records(), "/late") == ["late"]
        assert "Traceback" not in h.stderr()
    finally:
        os.kill(child, signal.SIGKILL)  # the procs fixture stops the parent only


@pytest.mark.parametrize("how", ["segv", "kill"])
def test_target_crashing_mid_response(procs, certs, tmp_path, how):
    gw, port = start(procs, certs, "self")
    h = Run(procs, tmp_path, [gw.pid])
    assert get(port, "/a") == "0"
    get(port, f"/crash-{how}")
    gw.p.wait(10)
    assert gw.p.returncode == (-signal.SIGSEGV if how == "segv" else -signal.SIGKILL)
    rc = h.wait()
    err = h.stderr()
    assert rc == 0 and "Traceback" not in err, err
    assert "every target process has exited" in err
    recs = h.records()
    assert by_type(recs, "exit") and by_type(recs, "summary")
    req = [r for r in http_records(recs, kind="request") if r["path"] == f"/crash-{how}"]
    assert len(req) == 1
    half = [r for r in http_records(recs, kind="response") if r["truncated"]]
    # the half-written block ends with the process: reported truncated, or not at all (never a crash)
    assert all(r["status"] == 200 for r in half)
    assert "crash-secret-1" not in h.out.read_text()


def test_disk_full_is_a_clear_error_and_leaves_nothing_attached(procs, certs, tmp_path):
    """--output on a 16 KiB tmpfs: once it is full hdrlog stops with one sentence and exit 2, the summary on
    stderr, no traceback, and no breakpoint left in the target."""
    from test_kernel_lifecycle import call, https, patched_bytes, uprobe_events_of

    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        gw, port = start(procs, certs, "self")
        out = mnt / "o.jsonl"
        h = Run(procs, tmp_path, [gw.pid], extra=("--output", str(out)), output=False)
        c = https(port)
        for i in range(80):
            try:
                call(c, "GET", f"/x{i}", headers={"X-Pad": "a" * 300})
            except OSError:
                break
            if h.p.poll() is not None:
                break
        c.close()
        rc = h.wait(30)
        err = h.stderr()
        assert rc == 2, (rc, err)
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last == f"hdrlog: error: cannot write {out}: No space left on device; hdrlog stopped and removed " \
                       f"its probes.", err
        assert "hdrlog: detached." in err
        assert uprobe_events_of(h.pid) == [] and patched_bytes(gw.pid) == 0
        c = https(port)
        assert call(c, "GET", "/health") == 200
        c.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
