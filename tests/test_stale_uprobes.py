"""tracefs uprobe_events entries left by dead bcc-based tools: doctor names them and the exact command that
removes them, the command works, `hdrlog setup` removes them, and entries of live processes are never touched.
The entries are real tracefs definitions named as libbcc's tracefs fallback names them (..._bcc_<tool pid>)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hdrlog import preflight

pytestmark = pytest.mark.kernel

LIB = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def _events_file() -> Path:
    d = preflight._tracing_dir()
    assert d, "tracefs is not mounted"
    return Path(d, "uprobe_events")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def entries():
    """Two entries of dead tools, one of a live one (this test); every one removed at the end."""
    if not os.path.exists(LIB):
        pytest.skip(f"no {LIB}")
    ev = _events_file()
    tag = f"hdrlogtest{os.getpid()}"
    dead1, dead2, live = _dead_pid(), _dead_pid(), os.getpid()
    names = {
        "dead1": f"p_{tag}_libc_0x1000_{dead1}_bcc_{dead1}",
        "dead2": f"r_{tag}_libc_0x1000_{dead2}_bcc_{dead2}",
        "live": f"p_{tag}_libc_0x1000_{live}_bcc_{live}",
    }
    for name in names.values():
        preflight.write_uprobe_events(f"{name[0]}:uprobes/{name} {LIB}:0x1000\n")
    yield names
    for name in names.values():
        if name in ev.read_text():
            preflight.write_uprobe_events(f"-:uprobes/{name}\n")


def _doctor() -> dict:
    r = subprocess.run([sys.executable, "-m", "hdrlog", "doctor", "--no-compile", "--json"], capture_output=True,
                       text=True, timeout=60)
    checks = json.loads(r.stdout)["checks"]
    return next(c for c in checks if c["name"] == "stale uprobes")


def test_doctor_names_dead_tools_entries_and_the_command_removes_them(entries):
    item = _doctor()
    assert item["status"] == "warn"
    cmd = item["fix"].split("or run `", 1)[1].rstrip("`")
    assert f"-:uprobes/{entries['dead1']}" in cmd and f"-:uprobes/{entries['dead2']}" in cmd
    assert entries["live"] not in cmd and entries["live"] not in item["detail"]
    subprocess.run(["bash", "-c", cmd], check=True)
    text = _events_file().read_text()
    assert entries["dead1"] not in text and entries["dead2"] not in text
    assert entries["live"] in text
    assert entries["dead1"] not in json.dumps(_doctor())


def test_setup_removes_only_dead_tools_entries(entries):
    r = subprocess.run([sys.executable, "-m", "hdrlog", "setup", "--no-apt"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout and entries["dead1"] in r.stdout and entries["dead2"] in r.stdout
    text = _events_file().read_text()
    assert entries["dead1"] not in text and entries["dead2"] not in text
    assert entries["live"] in text, "an entry of a live process was removed"
    r = subprocess.run([sys.executable, "-m", "hdrlog", "setup", "--no-apt"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "removed" not in r.stdout, r.stdout
