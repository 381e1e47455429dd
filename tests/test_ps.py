"""`hdrlog ps` as a user runs it: real processes with and without TLS, listening ports, --pid, --all,
--json, a dropped-privileges run, and speed with a few hundred processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import free_port

PY = sys.executable
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="reads other processes' maps: needs root")


def hdrlog(*args, prefix=(), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, PY, "-m", "hdrlog", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.fixture
def tls_listener(procs):
    """Python with libssl mapped, listening on a loopback port."""
    port = free_port()
    code = (f"import socket, ssl, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
            "print('ready', flush=True); time.sleep(120)")
    p = procs([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.p.stdout.readline().strip() == "ready"
    return p, port


@needs_root
def test_lists_tls_processes_with_library_version_ports(tls_listener, procs):
    p, port = tls_listener
    sleeper = procs(["sleep", "60"])
    r = hdrlog("ps")
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.split()[0] == str(p.pid))
    assert "openssl OpenSSL 3." in row and "libssl.so.3" in row and str(port) in row and row.endswith("yes")
    assert not any(ln.split()[0] == str(sleeper.pid) for ln in r.stdout.splitlines()[1:] if ln.split())
    r = hdrlog("ps", "--all")
    row = next(ln for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] == str(sleeper.pid))
    assert " none " in row and "no: no SSL_read/SSL_write" in row


@needs_root
def test_pid_json_and_exit_codes(tls_listener, procs):
    p, port = tls_listener
    r = hdrlog("ps", "--pid", str(p.pid), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    (row,) = res["processes"]
    assert row["pid"] == p.pid and row["attachable"] is True and row["ports"] == [port]
    (tls,) = row["tls"]
    assert tls["kind"] == "openssl" and tls["version"].startswith("OpenSSL 3.") and tls["path"].endswith("libssl.so.3")
    assert {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"} <= set(tls["symbols"])
    sleeper = procs(["sleep", "60"])
    r = hdrlog("ps", "--pid", str(sleeper.pid))
    assert r.returncode == 1
    assert "No OpenSSL/BoringSSL SSL_read/SSL_write found in PID" in r.stdout  # the full sentence for --pid
    gone = subprocess.Popen(["true"])
    gone.wait()
    r = hdrlog("ps", "--pid", str(gone.pid))
    assert r.returncode == 1 and f"process {gone.pid} does not exist" in r.stdout


@needs_root
def test_children_are_marked_as_covered_by_their_parent(procs):
    code = ("import ssl, subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
            "'import ssl, time; time.sleep(120)']); print(c.pid, flush=True); time.sleep(120)")
    parent = procs([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.p.stdout.readline())
    try:
        r = hdrlog("ps")
        row = next(ln for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] == str(child))
        assert row.startswith(f"{child} ^{parent.pid}")
    finally:
        os.kill(child, 9)


@pytest.mark.skipif(not (IS_ROOT and shutil.which("setpriv")), reason="needs root and setpriv")
def test_unprivileged_run_says_why(tls_listener):
    p, _ = tls_listener
    r = hdrlog("ps", "--pid", str(p.pid), prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                                  "--inh-caps=-all"], cwd="/")
    assert r.returncode == 1, r.stderr
    assert "Permission denied" in r.stdout and "root" in r.stdout
    assert "attaching is not possible on this machine: running as uid 65534" in r.stdout


@needs_root
def test_fast_with_hundreds_of_processes(procs, tls_listener):
    """~300 processes (as on a busy gateway host): ELF results are cached per inode, so this stays quick."""
    many = [procs(["sleep", "120"]) for _ in range(150)]
    many += [procs([PY, "-c", "import ssl, time; time.sleep(120)"]) for _ in range(30)]
    time.sleep(1.0)  # let the interpreters map libssl
    n = int(subprocess.run("ps -e --no-headers | wc -l", shell=True, capture_output=True, text=True).stdout)
    assert n >= 200
    t0 = time.monotonic()
    r = hdrlog("ps", "--all")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    listed = {int(ln.split()[0]) for ln in r.stdout.splitlines()[1:] if ln.split() and ln.split()[0].isdigit()}
    assert {p.pid for p in many} <= listed
    assert took < 10, f"hdrlog ps --all took {took:.1f}s for {n} processes"
    print(f"hdrlog ps --all: {n} processes in {took:.2f}s")
