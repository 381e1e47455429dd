"""The kernel refuses hdrlog's uprobe at a placed offset (EINVAL): hdrlog probes those functions at their
entries instead, says so once, and captures as usual (loader.ProbeSet.attach).

The kernel refuses a second uprobe at a file offset that already has one with another reference counter
(`ref_ctr_offset mismatch` in dmesg); another tool's USDT-style probe, or one leaked by a buggy tool, does
that. The test makes such a conflict on purpose, on a private copy of libssl (so no other process on the
machine is affected): a uprobe_multi link with a reference counter at the placed offset of the internal read
function, filtered to an idle dummy process (only its memory gets the breakpoint and the counter), while the
demo gateway maps the same copy and hdrlog attaches to the gateway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import ssl as ssl_mod

import pytest

from conftest import http_records, start_server
from test_kernel_lifecycle import Run

pytestmark = pytest.mark.kernel


def _libssl_of(pid: int) -> str:
    for line in open(f"/proc/{pid}/maps"):
        path = line.split()[-1]
        if "/libssl.so" in path:
            return path
    raise AssertionError(f"process {pid} maps no libssl")


def _writable_data_offset(path: str) -> int:
    """A file offset inside libssl's writable .data (not the RELRO part), for the conflicting probe's counter."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".data")
        assert sec is not None and sec["sh_size"] >= 16, "libssl has no .data section"
        return sec["sh_offset"] + sec["sh_size"] - 8


def _get(port: int, path: str) -> int:
    ctx = ssl_mod.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl_mod.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:  # the demo gateway answers unknown paths with 404
        return e.code


def test_a_refused_placed_offset_falls_back_to_the_entry(procs, certs, tmp_path):
    from hdrlog import discover, placement, uprobelink
    from hdrlog.elfsyms import ElfFile
    from hdrlog.tlslibs import REGISTRY

    if uprobelink.mode() != "multi":
        pytest.skip("needs uprobe_multi links (Linux 6.6+) to make the conflicting probe")
    libdir = tmp_path / "lib"
    libdir.mkdir()
    system_libssl = _libssl_of(os.getpid()) if "ssl" in sys.modules else None
    if system_libssl is None:
        import ssl  # noqa: F401 - maps libssl into this process

        system_libssl = _libssl_of(os.getpid())
    copy = libdir / os.path.basename(system_libssl)
    shutil.copy2(system_libssl, copy)
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))

    cert, key = certs
    gw, port = start_server(procs, [sys.executable, "-m", "hdrlog.demo.gateway", "--cert", cert, "--key", key],
                            env=env)
    assert _libssl_of(gw.pid) == str(copy), "the gateway does not load the private libssl copy"
    dummy = procs([sys.executable, "-c", "import ssl, sys; print('ready', flush=True); sys.stdin.read()"],
                  env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert dummy.p.stdout.readline().strip() == "ready"
    assert _libssl_of(dummy.pid) == str(copy)

    # where hdrlog places the read probe in the copy (the internal function SSL_read/SSL_read_ex call)
    target = next(t for t in discover.find_tls(gw.pid) if t.mapping.path == str(copy))
    with ElfFile(str(copy)) as elf:
        sites = placement.plan(elf, REGISTRY[target.kind], target.symbols, path=str(copy), mode="auto")
    read = next(s for s in sites if s.kind == "entry" and "SSL_read" in s.symbol)
    entry = target.symbols["SSL_read"].offset if "SSL_read" in target.symbols else None
    assert read.offset != entry, "placement put the read probe at SSL_read's entry: nothing to fall back from"

    prog, err = uprobelink._load_trivial(uprobelink.BPF_TRACE_UPROBE_MULTI)
    assert prog >= 0, os.strerror(err)
    try:
        link = uprobelink.attach_multi(prog, str(copy), [read.offset], dummy.pid, False,
                                       ref_ctr_offsets=[_writable_data_offset(str(copy))])
        try:
            h = Run(procs, tmp_path, [gw.pid], extra=["--verbose"])
            err_text = h.stderr()
            assert f"the kernel refused a uprobe at {read.where}" in err_text, err_text
            assert "SSL_read, SSL_read_ex are probed at their entries instead" in err_text, err_text
            assert err_text.count("the kernel refused a uprobe at") == 1  # said once
            # --verbose gives each moved probe's real reason (not "--placement entry", which was not asked for)
            moved = [ln for ln in err_text.splitlines() if ln.startswith("hdrlog: probe ") and " ossl_read" in ln]
            assert moved and all(f"refused the placed offset {read.where}" in ln for ln in moved), err_text
            assert not any("--placement entry" in ln for ln in moved), err_text
            for i in range(3):
                assert _get(port, f"/refused-{i}") in (200, 404)
            time.sleep(0.3)
            assert h.signal(2) == 0, h.stderr()
            reqs = [r for r in http_records(h.records(), kind="request") if r["path"].startswith("/refused-")]
            resps = [r for r in http_records(h.records(), kind="response")
                     if (r.get("request") or {}).get("path", "").startswith("/refused-")]
            assert [r["path"] for r in reqs] == ["/refused-0", "/refused-1", "/refused-2"], h.stderr()
            assert len(resps) == 3
        finally:
            os.close(link)
    finally:
        os.close(prog)
