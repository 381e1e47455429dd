"""preflight and `hdrlog setup` against the real machine, dropped privileges, and scratch root trees.

Tests that change mounts or /lib/modules do it inside a private mount namespace (`unshare -m`), so the
host's real links and tracefs mount are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest

from hdrlog import preflight, setupcmd
from hdrlog.errors import HdrlogError
from hdrlog.preflight import Check, check_kernel_headers, explain_compile_error

from conftest import python_without_bcc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
RELEASE = os.uname().release
SYS_PYTHON = "/usr/bin/python3"
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def _have_debian_bcc() -> bool:
    return os.path.isfile("/usr/lib/python3/dist-packages/bcc/__init__.py") and os.access(SYS_PYTHON, os.X_OK)


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def world_pkg():
    """A world-readable copy of the stdlib-only modules preflight needs, importable by uid 65534."""
    d = tempfile.mkdtemp(prefix="hdrlog-preflight-")
    os.chmod(d, 0o755)
    pkg = os.path.join(d, "hdrlog")
    os.mkdir(pkg, 0o755)
    for name in ("__init__.py", "errors.py", "preflight.py", "procstate.py"):
        shutil.copy(SRC / "hdrlog" / name, pkg)
        os.chmod(os.path.join(pkg, name), 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run_check(python: str, pkg_dir: str, expr: str, prefix: list[str] = (), extra_flags=("-I",)) -> dict:
    """Run `expr` (a preflight call returning a Check) in a fresh interpreter; return the Check as a dict."""
    code = textwrap.dedent(f"""
        import dataclasses, json, sys
        sys.path.insert(0, {pkg_dir!r})
        from hdrlog import preflight
        print(json.dumps(dataclasses.asdict({expr})))
    """)
    r = subprocess.run([*prefix, python, *extra_flags, "-B", "-c", code], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, f"child failed ({r.returncode}): {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _in_child(fn, uid=65534, gid=65534):
    """Fork, drop to uid/gid with no supplementary groups (which clears every capability), run fn()."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = {"value": fn()}
            except HdrlogError as exc:
                out = {"error": str(exc)}
            os.write(wfd, json.dumps(out, default=lambda o: o.__dict__).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


# --------------------------------------------------------------------------------------- privileges
@needs_root
def test_privileges_ok_as_root():
    c = preflight.check_privileges()
    assert c.ok, c
    assert c.fix is None


@needs_root
def test_privileges_not_ok_after_setuid_in_forked_child():
    out = _in_child(preflight.check_privileges)["value"]
    assert out["ok"] is False
    assert "uid 65534" in out["detail"]
    assert "root" in out["fix"]


def _setpriv(*args):
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    return ["setpriv", *args]


def test_privileges_not_ok_for_nobody_via_setpriv(world_pkg):
    prefix = _setpriv("--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")
    c = _run_check(os.path.realpath(SYS_PYTHON), world_pkg, "preflight.check_privileges()", prefix)
    assert not c["ok"] and "uid 65534" in c["detail"]
    assert "sudo" in c["fix"] or "root" in c["fix"]


def test_privileges_not_ok_for_root_without_capabilities(world_pkg):
    prefix = _setpriv("--inh-caps=-all", "--bounding-set=-all")
    c = _run_check(os.path.realpath(SYS_PYTHON), world_pkg, "preflight.check_privileges()", prefix)
    assert not c["ok"]
    assert "root but without" in c["detail"]
    assert c["fix"]


def test_privileges_ok_for_nobody_with_cap_bpf_and_perfmon(world_pkg):
    prefix = _setpriv("--reuid=65534", "--regid=65534", "--clear-groups",
                      "--inh-caps=-all,+bpf,+perfmon", "--ambient-caps=-all,+bpf,+perfmon")
    c = _run_check(os.path.realpath(SYS_PYTHON), world_pkg, "preflight.check_privileges()", prefix)
    assert c["ok"], c
    assert "CAP_BPF" in c["detail"]


@needs_root
def test_require_attach_ready_raises_for_unprivileged_child():
    out = _in_child(preflight.require_attach_ready)
    assert "error" in out, out
    msg = out["error"]
    assert "uid 65534" in msg and "root" in msg
    assert "\n" not in msg and msg.endswith(".")


@needs_root
def test_require_attach_ready_passes_here():
    """make setup prepared this machine; anything that fails here would fail `hdrlog attach` too."""
    preflight.require_attach_ready()


# ---------------------------------------------------------------------------------- kernel headers
def _fake_headers(root: Path, ver: str, flavour: str = "amd64", common: bool = True) -> tuple[Path, Path]:
    flav = root / "usr/src" / f"linux-headers-{ver}-{flavour}"
    (flav / "include/generated").mkdir(parents=True)
    (flav / "include/generated/autoconf.h").write_text("#define CONFIG_X86_64 1\n")
    (flav / "include/config").mkdir()
    com = root / "usr/src" / f"linux-headers-{ver}-common"
    if common and not com.exists():
        (com / "include/linux").mkdir(parents=True)
        (com / "include/linux/kconfig.h").write_text("/* kconfig */\n")
    return flav, com


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "_debian_arch", lambda: "amd64")
    _fake_headers(tmp_path, "6.1.0-50")
    flav, com = _fake_headers(tmp_path, "6.1.0-56")
    _fake_headers(tmp_path, "6.1.0-56", "cloud-amd64")  # same version, other flavour: not preferred
    _fake_headers(tmp_path, "6.1.0-9")  # 9 < 50 < 56 numerically, although "9" > "5" as text
    _fake_headers(tmp_path, "6.1.0-60", common=False)  # newest, but no -common: unusable
    (tmp_path / "usr/src/linux-kbuild-6.1").mkdir()
    return tmp_path, flav, com


def test_headers_missing_gives_the_fix_sentence(scratch):
    root, flav, com = scratch
    c = check_kernel_headers(fix=False, root=str(root))
    assert not c.ok
    assert c.detail == f"no kernel headers for {RELEASE}"
    assert c.fix.startswith("run `hdrlog setup` (or: ")
    mod = f"/lib/modules/{RELEASE}"
    assert f"ln -sfn /usr/src/linux-headers-6.1.0-56-amd64 {mod}/build" in c.fix
    assert f"ln -sfn /usr/src/linux-headers-6.1.0-56-common {mod}/source" in c.fix
    assert c.message() == f"no kernel headers for {RELEASE}: {c.fix}"
    assert not (root / "lib").exists(), "fix=False must not create anything"


def test_headers_fix_creates_both_links_then_is_idempotent(scratch):
    root, flav, com = scratch
    mod = root / "lib/modules" / RELEASE
    c, actions = preflight._kernel_headers(fix=True, root=str(root))
    assert c.ok, c
    assert os.readlink(mod / "build") == str(flav)
    assert os.readlink(mod / "source") == str(com)
    assert len(actions) == 2
    before = {n: os.lstat(mod / n).st_ino for n in ("build", "source")}

    c2, actions2 = preflight._kernel_headers(fix=True, root=str(root))
    assert c2.ok and actions2 == []
    assert {n: os.lstat(mod / n).st_ino for n in ("build", "source")} == before
    assert check_kernel_headers(fix=False, root=str(root)).ok


def test_headers_existing_good_links_are_left_alone(scratch):
    root, _flav, _com = scratch
    old_flav, old_com = root / "usr/src/linux-headers-6.1.0-50-amd64", root / "usr/src/linux-headers-6.1.0-50-common"
    mod = root / "lib/modules" / RELEASE
    mod.mkdir(parents=True)
    (mod / "build").symlink_to(old_flav)
    (mod / "source").symlink_to(old_com)
    c, actions = preflight._kernel_headers(fix=True, root=str(root))
    assert c.ok and actions == []
    assert os.readlink(mod / "build") == str(old_flav)  # complete tree, older version: not our business


def test_headers_build_only_link_is_incomplete_and_gets_fixed(scratch):
    """The split Debian layout: build alone (no source link) lacks linux/kconfig.h, as bcc found out."""
    root, flav, com = scratch
    mod = root / "lib/modules" / RELEASE
    mod.mkdir(parents=True)
    (mod / "build").symlink_to(flav)
    c = check_kernel_headers(fix=False, root=str(root))
    assert not c.ok and "incomplete" in c.detail
    assert check_kernel_headers(fix=True, root=str(root)).ok
    assert os.readlink(mod / "source") == str(com)


def test_headers_dangling_links_are_replaced(scratch):
    root, flav, com = scratch
    mod = root / "lib/modules" / RELEASE
    mod.mkdir(parents=True)
    (mod / "build").symlink_to(root / "usr/src/linux-headers-6.1.0-1-amd64")  # removed by an upgrade
    (mod / "source").symlink_to(root / "usr/src/linux-headers-6.1.0-1-common")
    assert not check_kernel_headers(fix=False, root=str(root)).ok
    assert check_kernel_headers(fix=True, root=str(root)).ok
    assert os.readlink(mod / "build") == str(flav)


def test_headers_real_directory_is_never_replaced(scratch):
    root, _flav, _com = scratch
    mod = root / "lib/modules" / RELEASE
    (mod / "build").mkdir(parents=True)
    c = check_kernel_headers(fix=True, root=str(root))
    assert not c.ok and "will not replace" in c.detail
    assert (mod / "build").is_dir() and not (mod / "build").is_symlink()


def test_headers_none_installed_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "_debian_arch", lambda: "amd64")
    (tmp_path / "usr/src").mkdir(parents=True)
    c = check_kernel_headers(fix=True, root=str(tmp_path), release="6.18.1-test")
    assert not c.ok
    assert c.detail == "no kernel headers for 6.18.1-test"
    assert "apt-get install linux-headers-amd64" in c.fix
    assert not (tmp_path / "lib").exists()


def test_headers_kheaders_tarball_counts(tmp_path):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/kheaders.tar.xz").write_bytes(b"\xfd7zXZ")
    assert check_kernel_headers(fix=False, root=str(tmp_path)).ok


def test_headers_ok_on_this_machine():
    """`make setup` (hdrlog setup) has linked Debian's headers for this kernel."""
    c = check_kernel_headers(fix=False)
    assert c.ok, c.message()


def test_run_setup_on_scratch_root_links_then_has_nothing_to_do(scratch, capsys):
    root, flav, _com = scratch
    if not preflight.check_tracefs(mount=False).ok:
        pytest.skip("tracefs not mounted here; covered by the namespace test")
    assert setupcmd.run_setup(Namespace(no_apt=True, root=str(root))) == 0
    out = capsys.readouterr().out
    assert f"linked {root}/lib/modules/{RELEASE}/build -> {flav}" in out
    assert setupcmd.run_setup(Namespace(no_apt=True, root=str(root))) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_run_setup_no_apt_without_headers_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "_debian_arch", lambda: "amd64")
    (tmp_path / "usr/src").mkdir(parents=True)
    if not IS_ROOT:
        pytest.skip("needs root")
    with pytest.raises(HdrlogError, match=r"apt-get install linux-headers-amd64 \(or run `hdrlog setup` without --no-apt\)"):
        setupcmd.run_setup(Namespace(no_apt=True, root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------- bcc
def test_bcc_not_ok_under_path_python3_without_bcc():
    py = python_without_bcc()
    if py is None:
        pytest.skip("the python3 on PATH is Debian's (or sees bcc)")
    c = _run_check(py, str(SRC), "preflight.check_bcc()")
    assert not c["ok"]
    assert "cannot be imported" in c["detail"]
    assert "python3-bpfcc" in c["fix"] and "--system-site-packages" in c["fix"] and "/usr/bin/python3" in c["fix"]


def test_bcc_not_ok_without_site_packages():
    """/usr/bin/python3 -S has no dist-packages: the same situation as a venv without system site-packages."""
    c = _run_check(os.path.realpath(SYS_PYTHON), str(SRC), "preflight.check_bcc()", extra_flags=("-I", "-S"))
    assert not c["ok"] and "python3-bpfcc" in c["fix"]


def test_bcc_impostor_module_is_not_ok(tmp_path):
    """PyPI's `bcc` is not BCC: a module named bcc without BPF must not pass."""
    (tmp_path / "bcc").mkdir()
    (tmp_path / "bcc/__init__.py").write_text("'unrelated package'\n")
    c = _run_check(os.path.realpath(SYS_PYTHON), str(SRC),
                   f"(sys.path.insert(0, {str(tmp_path)!r}), preflight.check_bcc())[1]")
    assert not c["ok"] and "not BCC's Python binding" in c["detail"]


@pytest.mark.skipif(not _have_debian_bcc(), reason="python3-bpfcc not installed")
def test_bcc_ok_under_debian_python():
    c = _run_check(SYS_PYTHON, str(SRC), "preflight.check_bcc()")
    assert c["ok"], c
    assert "/usr/lib/python3/dist-packages/bcc" in c["detail"]


# ------------------------------------------------------------------------------------------ tracefs
def test_tracefs_ok_here():
    c = preflight.check_tracefs(mount=False)
    assert c.ok, c.message()


def _unshare(script: str) -> subprocess.CompletedProcess:
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux)")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-euc", script],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(SRC), PYTHONDONTWRITEBYTECODE="1"))


def test_tracefs_unmounted_then_mounted_in_private_namespace():
    code = ("import dataclasses, json; from hdrlog import preflight; "
            "print(json.dumps([dataclasses.asdict(preflight.check_tracefs(mount=m)) for m in (False, True, False)]))")
    r = _unshare(f"""
        umount -R /sys/kernel/tracing 2>/dev/null || true
        umount -R /sys/kernel/debug 2>/dev/null || true
        {SYS_PYTHON} -c '{code}'
    """)
    assert r.returncode == 0, r.stderr
    before, mounted, after = json.loads(r.stdout.splitlines()[-1])
    assert not before["ok"] and before["fix"] == "run `mount -t tracefs nodev /sys/kernel/tracing` as root"
    assert mounted["ok"] and "mounted now" in mounted["detail"]
    assert after["ok"]
    assert preflight.check_tracefs(mount=False).ok, "the host's tracefs must be untouched"


# ------------------------------------------------------------------------ compile errors, real bcc
# libbcc's own "Unable to find kernel headers. ..." line goes to fd 1, not fd 2: a stderr capture sees only this
MISSING_BUILD = """\
sh: 1: modprobe: not found
chdir(/lib/modules/6.18.44-fc-v657/build): No such file or directory
"""
UNABLE = ("Unable to find kernel headers. Try rebuilding kernel with CONFIG_IKHEADERS=m (module) or installing "
          "the kernel development package for your running kernel version.\n")
MISSING_SOURCE = """\
sh: 1: modprobe: not found
<built-in>:1:10: fatal error: './include/linux/kconfig.h' file not found
#include "./include/linux/kconfig.h"
         ^~~~~~~~~~~~~~~~~~~~~~~~~~~
1 error generated.
"""
MISSING_GENERATED = """\
In file included from <built-in>:1:
././include/linux/kconfig.h:5:10: fatal error: 'generated/autoconf.h' file not found
#include <generated/autoconf.h>
         ^~~~~~~~~~~~~~~~~~~~~~
1 error generated.
"""


@pytest.mark.parametrize("text", [MISSING_BUILD, UNABLE + MISSING_BUILD, MISSING_SOURCE, MISSING_GENERATED])
def test_explain_missing_headers(text):
    msg = explain_compile_error(text)
    assert "kernel headers" in msg and f"for {RELEASE}" in msg
    assert "run `hdrlog setup`" in msg and "linux-headers" in msg
    assert "\n" not in msg and msg.endswith(".")
    assert "please report" not in msg


def test_explain_other_clang_error_quotes_first_error_and_asks_for_a_report():
    text = textwrap.dedent("""\
        /virtual/main.c:3:5: warning: unused variable 'x' [-Wunused-variable]
            int x;
                ^
        /virtual/main.c:7:12: error: use of undeclared identifier 'nope'
            return nope;
                   ^
        /virtual/main.c:9:1: error: expected '}'
        2 errors generated.
    """)
    msg = explain_compile_error(text)
    assert "/virtual/main.c:7:12: error: use of undeclared identifier 'nope'" in msg
    assert "expected '}'" not in msg and "warning" not in msg
    assert "please report" in msg and "\n" not in msg


def test_explain_missing_project_header_is_a_bug_not_a_headers_problem():
    msg = explain_compile_error("/virtual/main.c:1:10: fatal error: 'hdrlog.h' file not found\n1 error generated.\n")
    assert "'hdrlog.h' file not found" in msg and "please report" in msg
    assert "hdrlog setup" not in msg


def test_explain_empty_stderr():
    msg = explain_compile_error("")
    assert msg and "\n" not in msg and "please report" in msg


BCC_PROG = textwrap.dedent("""
    import os, sys
    from bcc import BPF
    err = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2); os.dup2(err, 2)   # libbcc writes clang diagnostics on fd 2
    try:
        BPF(text='#include <uapi/linux/ptrace.h>\\n#include <linux/sched.h>\\n'
                 'int f(struct pt_regs *ctx) { return 0; }')
        ok = True
    except Exception:
        ok = False
    os.dup2(saved, 2)
    print("COMPILED" if ok else "FAILED")
""")


@pytest.mark.skipif(not (IS_ROOT and _have_debian_bcc()), reason="needs root and python3-bpfcc")
def test_real_bcc_compile_fails_without_headers_and_works_after_hdrlog_setup(tmp_path):
    """Hide /lib/modules (private namespace): bcc fails, the explanation names the fix, setup repairs it."""
    prog = tmp_path / "compile.py"
    prog.write_text(BCC_PROG)
    err1, err2 = tmp_path / "err1", tmp_path / "err2"
    r = _unshare(f"""
        mount -t tmpfs none /lib/modules
        {SYS_PYTHON} {prog} {err1}
        {SYS_PYTHON} -m hdrlog.setupcmd --no-apt
        {SYS_PYTHON} {prog} {err2}
        {SYS_PYTHON} -m hdrlog.setupcmd --no-apt
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines.index("FAILED") < lines.index("COMPILED"), r.stdout
    msg = explain_compile_error(err1.read_text())
    assert "kernel headers" in msg and "hdrlog setup" in msg, msg
    assert any(f"linked /lib/modules/{RELEASE}/build ->" in ln for ln in lines)
    assert any(f"linked /lib/modules/{RELEASE}/source ->" in ln for ln in lines)
    assert "Failed" not in err2.read_text()
    assert "nothing to do" in lines[-1]
    assert check_kernel_headers(fix=False).ok, "the host's links must be untouched"


# --------------------------------------------------------------------------------- uprobes, BTF, misc
def test_uprobes_and_btf_here():
    assert preflight.check_uprobes().ok
    assert preflight.check_btf().ok


def test_check_message_forms():
    assert Check("x", True, "fine", None).message() == "fine"
    assert Check("x", False, "broken", "do this").message() == "broken: do this"
