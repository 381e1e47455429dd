"""``hdrlog setup``: make this machine ready to attach (kernel headers links, tracefs; removes tracefs uprobe
events that dead bcc-based tools left behind).

Idempotent: a second run changes nothing and says so.  Run by ``make setup`` after the packages and
the venv are in place; also usable on its own as root (``python -m hdrlog.setupcmd [--no-apt]``).
"""

from __future__ import annotations

import os
import subprocess
import sys

from hdrlog import preflight
from hdrlog.errors import HdrlogError


def _apt_install_headers() -> str:
    """Install Debian's linux-headers-ARCH metapackage; return what was done."""
    pkg = f"linux-headers-{preflight._debian_arch()}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    print(f"hdrlog setup: installing {pkg} (apt-get update && apt-get install {pkg})", flush=True)
    for cmd in (apt + ["update"], apt + ["install", "-y", "--no-install-recommends", pkg]):
        try:
            r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise HdrlogError(f"no kernel headers found and apt-get is missing: install {pkg} (or this kernel's headers) by hand, then run `hdrlog setup`.") from None
        if r.returncode != 0:
            raise HdrlogError(f"`{' '.join(cmd)}` failed (exit {r.returncode}, output above): fix apt, then run `hdrlog setup` again.")
    return f"installed {pkg}"


def run_setup(args) -> int:
    no_apt = bool(getattr(args, "no_apt", False))
    root = getattr(args, "root", None) or "/"  # tests point this at a scratch tree
    done: list[str] = []

    headers, actions = preflight._kernel_headers(fix=False, root=root)
    if not headers.ok:
        if os.geteuid() != 0:
            raise HdrlogError(f"{headers.detail}, and `hdrlog setup` must run as root to fix that: run `sudo hdrlog setup`.")
        pkg = f"linux-headers-{preflight._debian_arch()}"
        if preflight.find_headers_dirs(root) is None:
            if no_apt:
                raise HdrlogError(
                    f"{headers.detail} and none are installed under /usr/src: "
                    f"apt-get install {pkg} (or run `hdrlog setup` without --no-apt)."
                )
            done.append(_apt_install_headers())
            if preflight.find_headers_dirs(root) is None:
                raise HdrlogError(
                    f"{headers.detail}: {pkg} is installed but no /usr/src/linux-headers-*-{preflight._debian_arch()} "
                    "with a matching -common appeared; install headers for this kernel by hand."
                )
        headers, actions = preflight._kernel_headers(fix=True, root=root)
        done += actions
        if not headers.ok:
            raise HdrlogError(headers.message() + ".")

    tracefs, actions = preflight._tracefs(mount=True)
    done += actions
    if not tracefs.ok:
        if os.geteuid() != 0:
            raise HdrlogError(f"{tracefs.detail}, and `hdrlog setup` must run as root to mount it: run `sudo hdrlog setup`.")
        raise HdrlogError(tracefs.message() + ".")

    if root == "/" and os.geteuid() == 0:
        removed, errors = preflight.remove_stale_uprobe_events()
        if removed:
            done.append(f"removed {len(removed)} tracefs uprobe_events entr{'y' if len(removed) == 1 else 'ies'} left "
                        f"by dead bcc-based tools: {', '.join(removed)}")
        for e in errors:
            print(f"hdrlog setup: warning: could not remove the stale uprobe event {e}", file=sys.stderr)

    for line in done:
        print(f"hdrlog setup: {line}")
    if not done:
        print(f"hdrlog setup: nothing to do ({headers.detail}; {tracefs.detail})")

    bcc = preflight.check_bcc()  # not ours to fix here (make setup installs it), but say so now, not at attach time
    if not bcc.ok:
        print(f"hdrlog setup: warning: {bcc.message()}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m hdrlog.setupcmd", description=__doc__.splitlines()[0])
    p.add_argument("--no-apt", action="store_true", help="never install packages; only link and mount")
    try:
        return run_setup(p.parse_args(argv))
    except HdrlogError as exc:
        print(f"hdrlog setup: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
