"""`hdrlog doctor` as a user runs it: a ready machine, the plan for a real process, --probe-seconds verdicts
(traffic, no traffic, traffic that is not HTTP), and its failure paths: no bcc (an interpreter without
it), no tracefs (private mount namespace), not root (dropped privileges). Every FAIL line is followed by
a fix line, and the exit code is 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, python_without_bcc, run_client, start_server

PY = sys.executable
SRC = ROOT / "src"
IS_ROOT = os.geteuid() == 0
kernel = pytest.mark.kernel


def hdrlog(*args, prefix=(), python=PY, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, python, "-m", "hdrlog", *args], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env=env, **kw)


def lines(out: str, status: str) -> dict[str, str]:
    """{check name: detail} of the lines with this status (ok, warn, info, FAIL)."""
    got = {}
    for ln in out.splitlines():
        parts = ln.split(None, 1)
        if len(parts) == 2 and parts[0] == status:
            name_detail = parts[1]
            got[name_detail[:18].strip()] = name_detail[18:].strip()
    return got


def assert_fixes(out: str) -> None:
    """Every FAIL line is followed by its fix."""
    rows = out.splitlines()
    for i, ln in enumerate(rows):
        if ln.lstrip().startswith("FAIL"):
            assert rows[i + 1].strip().startswith("fix: "), (ln, rows[i + 1])


@kernel
def test_ready_machine_and_the_plan_for_a_process(gateway):
    gw, port = gateway
    r = hdrlog("doctor", "--pid", str(gw.pid))
    assert r.returncode == 0, r.stdout + r.stderr
    ok = lines(r.stdout, "ok")
    for name in ("python packages", "privileges", "tracefs", "uprobes", "BPF ring buffer", "bcc", "kernel headers",
                 "probe compile", "TLS library", "symbols", "attribution"):
        assert name in ok, (name, r.stdout)
    assert ok["TLS library"].startswith("openssl OpenSSL 3.") and "libssl.so.3" in ok["TLS library"]
    assert "exact" in ok["attribution"]
    probes = [ln for ln in r.stdout.splitlines() if " probe " in ln]
    assert any("SSL_read" in ln and "emulated" in ln for ln in probes), probes
    assert any("SSL_write" in ln for ln in probes) and any("SSL_free" in ln for ln in probes)
    assert f"TCP ports {port}" in r.stdout
    assert r.stdout.rstrip().endswith("all checks passed")


@kernel
def test_process_without_tls_fails_with_a_fix(procs):
    s = procs(["sleep", "60"])
    r = hdrlog("doctor", "--no-compile", "--pid", str(s.pid))
    assert r.returncode == 1
    fail = lines(r.stdout, "FAIL")
    assert "No OpenSSL/BoringSSL SSL_read/SSL_write found" in fail["TLS library"]
    assert_fixes(r.stdout)
    r = hdrlog("doctor", "--no-compile", "--pid", str(s.pid), "--json")
    import json

    res = json.loads(r.stdout)
    assert res["ok"] is False and any(c["status"] == "fail" and c["fix"] for c in res["checks"])


def _doctor_probe(tmp_path, pid: int, seconds: float, traffic=None) -> subprocess.CompletedProcess:
    err = tmp_path / "doctor.err"
    with open(err, "w") as ef:
        p = subprocess.Popen([PY, "-m", "hdrlog", "doctor", "--no-compile", "--pid", str(pid), "--probe-seconds",
                              str(seconds)], stdout=subprocess.PIPE, stderr=ef, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while "attached" not in err.read_text():
            assert p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        if traffic:
            traffic()
        out, _ = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err.read_text())


@kernel
def test_probe_with_traffic(gateway, tmp_path):
    gw, port = gateway
    r = _doctor_probe(tmp_path, gw.pid, 3, traffic=lambda: run_client(port, "doc", requests=5, connections=1))
    assert r.returncode == 0, r.stdout + r.stderr
    ok = lines(r.stdout, "ok")
    # Python's ssl under the default placement: probed where OpenSSL's record layer copies the data
    assert "ssl3_read_bytes (copy site)" in ok["events"] and "ssl3_write_bytes (copy site)" in ok["events"]
    assert ok["parsed"].startswith("10 HTTP messages (5 requests, 5 responses")
    assert ok["attribution"].startswith("1 connection(s): 1 exact")


@kernel
def test_probe_without_traffic_says_to_send_some(gateway, tmp_path):
    gw, port = gateway
    r = _doctor_probe(tmp_path, gw.pid, 1)
    assert r.returncode == 1
    fail = lines(r.stdout, "FAIL")
    assert fail["events"].startswith("no probe fired in 1 s (SSL_read 0, SSL_read_ex 0, SSL_write 0")
    assert f"made no TLS reads or writes" in fail["events"]
    assert f"fix: send traffic to it during the probe (e.g. curl -k https://127.0.0.1:{port}/)" in r.stdout


TLS_ECHO = textwrap.dedent("""
    import socket, ssl, sys, threading
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
    print("listening", srv.getsockname()[1], flush=True)
    def serve(c):
        with ctx.wrap_socket(c, server_side=True) as s:
            while (d := s.recv(4096)):
                s.sendall(d)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")


@kernel
def test_probe_with_traffic_that_is_not_http(procs, certs, tmp_path):
    cert, key = certs
    script = tmp_path / "echo.py"
    script.write_text(TLS_ECHO)
    srv, port = start_server(procs, [PY, str(script), cert, key])

    def traffic():
        import socket
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as s:
            for _ in range(3):
                s.sendall(b"PING hello\r\n")
                s.recv(100)

    r = _doctor_probe(tmp_path, srv.pid, 2, traffic=traffic)
    assert r.returncode == 1, r.stdout
    fail = lines(r.stdout, "FAIL")
    assert fail["parsed"] == ("events arrived but no HTTP message parsed: the traffic is text starting 'PING hello', "
                              "not an HTTP/1 request or status line")
    assert_fixes(r.stdout)


# ------------------------------------------------------------------------------------ failure paths
def test_missing_bcc():
    py = python_without_bcc()
    if py is None:
        pytest.skip("the python3 on PATH is Debian's (or sees bcc)")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = hdrlog("doctor", python=py, env=env, cwd="/")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    fail = lines(r.stdout, "FAIL")
    assert fail["bcc"].startswith("bcc cannot be imported by ") and "No module named 'bcc'" in fail["bcc"]
    assert "psutil" in fail["python packages"]  # hdrlog's own dependencies are named too
    assert "fix: install Debian's python3-bpfcc" in r.stdout and "--system-site-packages" in r.stdout
    assert_fixes(r.stdout)


def _unshare(script: str) -> subprocess.CompletedProcess:
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-uc", script],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)


def test_tracefs_unmounted_then_unmountable():
    r = _unshare(f"""
        umount -R /sys/kernel/tracing 2>/dev/null || true
        umount -R /sys/kernel/debug 2>/dev/null || true
        {PY} -m hdrlog doctor --no-compile; echo "@@rc=$?"
        mount -t tmpfs -o ro none /sys/kernel
        {PY} -m hdrlog doctor --no-compile; echo "@@rc=$?"
    """)
    first, second = r.stdout.split("@@rc=")[:2]
    second = second.split("\n", 1)[1]
    rc1, rc2 = (int(x.split()[0]) for x in r.stdout.split("@@rc=")[1:])
    warn = lines(first, "warn")
    assert warn["tracefs"] == "tracefs is not mounted at /sys/kernel/tracing; hdrlog attach mounts it itself"
    assert rc1 == 0, first
    fail = lines(second, "FAIL")
    assert fail["tracefs"].startswith("tracefs is not mounted at /sys/kernel/tracing"), second
    assert "fix: run `mount -t tracefs nodev /sys/kernel/tracing` as root" in second
    assert rc2 == 1
    assert_fixes(second)
    from hdrlog import preflight

    assert preflight.check_tracefs(mount=False).ok, "the host's tracefs must be untouched"


@pytest.mark.skipif(not (IS_ROOT and shutil.which("setpriv")), reason="needs root and setpriv")
def test_not_root(gateway):
    gw, _ = gateway
    r = hdrlog("doctor", "--pid", str(gw.pid), prefix=["setpriv", "--reuid=65534", "--regid=65534",
                                                       "--clear-groups", "--inh-caps=-all"], cwd="/")
    assert r.returncode == 1, r.stdout + r.stderr
    fail = lines(r.stdout, "FAIL")
    assert fail["privileges"].startswith("running as uid 65534 without CAP_BPF+CAP_PERFMON")
    assert "fix: run hdrlog as root (sudo hdrlog …)" in r.stdout
    assert fail["TLS library"].startswith(f"Permission denied reading /proc/{gw.pid}/maps")
    assert "fix: run hdrlog as root" in r.stdout
    assert lines(r.stdout, "info")["probe compile"] == "not tried (a check above failed)"
    assert_fixes(r.stdout)


def test_probe_seconds_needs_pid():
    r = hdrlog("doctor", "--probe-seconds", "2")
    assert r.returncode == 2 and r.stderr == "hdrlog: error: --probe-seconds needs --pid.\n"
