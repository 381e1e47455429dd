"""`hdrlog ps`: which processes hdrlog can attach to, with their TLS stack, listening ports and verdict.

Every process is searched the way `attach` searches it (discover.find_tls: the executable and libraries
named *ssl*, *crypto*, *tls*, *boring*, *node*; ELF results cached per inode, so a machine with hundreds
of processes sharing a few executables is quick). Processes without TLS code are listed with --all, with
the reason (discover.explain_none). Listening TCP ports come from one system-wide psutil scan. Whether
attaching is possible combines the machine checks (preflight: privileges, tracefs, uprobes, bcc, kernel
headers; nothing is changed) with the process's own result.
"""

from __future__ import annotations

import argparse
import os
import sys

from hdrlog.textsafe import TEXT_LIMIT, shown

EPILOG = """\
examples:
  hdrlog ps                 # processes hdrlog can attach to, with TLS library, version and ports
  hdrlog ps --all           # every process, and why the others cannot be attached to
  hdrlog ps --pid 4242      # one process, with the full explanation
  hdrlog ps --json | jq '.processes[] | select(.attachable) | .pid'

columns: PID, COMM, TLS (kind and version: openssl = a libssl*.so, openssl-static/boringssl = linked into
the executable, go = Go crypto/tls), LIBRARY (the file probed), PORTS (listening TCP ports), ATTACH (yes, or
why not). A child whose parent is listed is marked "^PPID": attaching to the parent covers it.
Exit code: 0, or 1 when --pid names no process hdrlog can attach to.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ps", help="list processes hdrlog can attach to (TLS library, version, listening ports)",
        description="List the processes hdrlog can attach to: the TLS stack found in each (libssl path and "
        "version, OpenSSL/BoringSSL linked into the executable, Go crypto/tls and the Go version), its "
        "listening TCP ports, and whether attaching is possible on this machine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pid", type=int, action="append", metavar="PID", help="only this process (repeatable)")
    p.add_argument("--all", "-a", action="store_true", help="also list processes without TLS code, with why")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")


def machine_verdict() -> tuple[bool, str]:
    """(attach possible, sentence) from the machine checks, changing nothing."""
    from hdrlog import preflight

    for run in (preflight.check_privileges, lambda: preflight.check_tracefs(mount=False),
                preflight.check_uprobes, preflight.check_bcc, lambda: preflight.check_kernel_headers(fix=False)):
        c = run()
        if not c.ok:
            if c.name == "tracefs" and os.geteuid() == 0:
                continue  # attach mounts it itself
            return False, c.message()
    return True, "this machine can attach (root/capabilities, uprobes, bcc, kernel headers)"


def _listening() -> dict[int, list[int]]:
    import psutil

    out: dict[int, set[int]] = {}
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return {}
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.pid and c.laddr:
            out.setdefault(c.pid, set()).add(c.laddr.port)
    return {pid: sorted(ports) for pid, ports in out.items()}


def _short_reason(text: str) -> str:
    """The gist of discover.explain_none's sentence for a table cell."""
    if "maps no files" in text:
        return "kernel thread or zombie"
    if "Permission denied" in text:
        return "cannot read its maps (not root)"
    if " is a Go " in text:
        go = text.split(" is a Go ", 1)[1].split(" binary", 1)[0]
        return f"Go {go}: " + text.rsplit("cannot probe its TLS: ", 1)[-1].rstrip(".")
    if "could not read" in text:
        return "no SSL_read/SSL_write found (some files unreadable)"
    return "no SSL_read/SSL_write in its executable or *ssl*/*crypto* libraries"


def scan(pids: list[int] | None, include_none: bool) -> dict:
    import psutil

    from hdrlog import discover
    from hdrlog.errors import HdrlogError
    from hdrlog.tlslibs import REGISTRY

    ok, machine = machine_verdict()
    ports = _listening()
    rows = []
    explicit = pids is not None
    procs = []
    if explicit:
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                rows.append({"pid": pid, "comm": None, "tls": [], "ports": [], "attachable": False,
                             "why": f"process {pid} does not exist", "ppid": None})
    else:
        procs = list(psutil.process_iter())
    me = os.getpid()
    for p in procs:
        pid = p.pid
        if pid == me and not explicit:
            continue
        try:
            with p.oneshot():
                comm, ppid = p.name(), p.ppid()
                status = p.status()
        except psutil.Error:
            continue
        row = {"pid": pid, "ppid": ppid, "comm": comm, "tls": [], "ports": ports.get(pid, []),
               "attachable": False, "why": None}
        if status == psutil.STATUS_ZOMBIE:
            if not explicit:
                continue
            row["why"] = "a zombie (it has exited)"
            rows.append(row)
            continue
        try:
            found = discover.find_tls(pid)
        except HdrlogError as exc:
            if not explicit and ("exited" in str(exc) or "No process" in str(exc)):
                continue
            row["why"] = str(exc).rstrip(".")
            if include_none or explicit:
                rows.append(row)
            continue
        usable = [t for t in found if t.kind in REGISTRY]
        row["tls"] = [{"kind": t.kind, "version": t.version, "path": t.mapping.path,
                       "symbols": sorted(t.symbols)} for t in found]
        if not usable:
            if not (include_none or explicit):
                continue
            if not found and (explicit or include_none):
                try:
                    text = discover.explain_none(pid)
                except HdrlogError as exc:
                    text = str(exc)
                row["why"] = text.rstrip(".") if explicit else _short_reason(text)
            elif found:
                row["why"] = "no probes for " + ", ".join(t.kind for t in found)
        else:
            row["attachable"] = ok
            row["why"] = None if ok else machine
        rows.append(row)
    listed = {r["pid"] for r in rows if r["tls"]}
    for r in rows:
        r["covered_by"] = r["ppid"] if r.get("ppid") in listed and r["tls"] else None
    rows.sort(key=lambda r: r["pid"])
    return {"machine": {"attach_possible": ok, "why": machine}, "processes": rows}


def _tls_text(t: dict) -> str:
    return f"{t['kind']} {shown(t['version'], TEXT_LIMIT)}" if t["version"] else t["kind"]


def render(res: dict, color: bool) -> str:
    rows = [["PID", "COMM", "TLS", "LIBRARY", "PORTS", "ATTACH"]]
    for r in res["processes"]:
        tls = r["tls"] or [None]
        for i, t in enumerate(tls):
            if i == 0:
                pid = str(r["pid"]) + (f" ^{r['covered_by']}" if r.get("covered_by") else "")
                comm = shown(r["comm"], TEXT_LIMIT) if r["comm"] else "?"  # a process names itself: any byte but NUL
                ports = ",".join(map(str, r["ports"][:6])) + ("…" if len(r["ports"]) > 6 else "") or "-"
                # (why: sentences that name processes, files and versions read from them)
                verdict = "yes" if r["attachable"] else f"no: {shown(r['why'], TEXT_LIMIT)}" if r["why"] else "no"
            else:
                pid = comm = ports = verdict = ""
            rows.append([pid, comm, _tls_text(t) if t else "none", shown(t["path"], TEXT_LIMIT) if t else "-", ports,
                         verdict])
    widths = [max(len(x[i]) for x in rows) for i in range(5)]
    out = []
    for n, x in enumerate(rows):
        line = "  ".join(c.ljust(w) for c, w in zip(x[:5], widths)) + "  " + x[5]
        if n == 0 and color:
            line = f"\033[1m{line}\033[0m"
        out.append(line.rstrip())
    m = res["machine"]
    if not m["attach_possible"]:
        out.append(f"attaching is not possible on this machine: {m['why']}.")
    n = sum(1 for r in res["processes"] if r["tls"])
    out.append(f"{n} process(es) with TLS code hdrlog can probe" + ("" if m["attach_possible"] else
                                                                     " (once the machine is fixed)"))
    return "\n".join(out) + "\n"


def run(args) -> int:
    import orjson

    res = scan(args.pid, include_none=args.all)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(render(res, sys.stdout.isatty()))
    if args.pid and not any(r["attachable"] for r in res["processes"]):
        return 1
    return 0
