"""Output records: one JSON object per line (the contract in README.md and records.schema.json).

:func:`http_record` is hdrlog._recfast's C version of :func:`http_record_py` when that extension is built
(redact.FAST = False makes it call http_record_py, the reference: tests/test_recfast.py compares them).
"""

from __future__ import annotations

import time

from hdrlog.conntrack import Conn
from hdrlog.events import Event
from hdrlog.model import HttpMessage
from hdrlog import redact
from hdrlog.redact import Redactor

_last_sec = -1
_last_prefix = ""


def rfc3339(ts_ns: int) -> str:
    """2026-11-21T10:00:00.123456Z (UTC, microseconds)."""
    global _last_sec, _last_prefix
    sec, ns = divmod(ts_ns, 1_000_000_000)
    if sec != _last_sec:
        _last_sec = sec
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return "%s.%06dZ" % (_last_prefix, ns // 1000)  # %-format: ~0.06 µs less than an f-string with :06d


def _conn_object(conn: Conn, key: tuple) -> dict:
    """The record's "conn" object, built again only when the connection's role, tuple or attribution change
    (key: see http_record). Records share it: nothing may modify it (orjson serialises it when the record is
    written)."""
    conn.rec_key = key
    conn.rec_conn = {
        "id": conn.id,
        "role": key[0],
        "local": conn.local,
        "peer": conn.peer,
        "attribution": conn.attribution,
    }
    return conn.rec_conn


def _path(conn: Conn, redactor: Redactor, path: str) -> str:
    """redactor.path(path), remembered for the connection's last path (its response repeats it)."""
    last = conn.rec_path
    if last is not None and last[1] is redactor and last[0] == path:
        return last[2]
    red = redactor.path(path)
    conn.rec_path = (path, redactor, red)
    return red


def http_record_py(conn: Conn, direction: str, msg: HttpMessage, ev: Event, redactor: Redactor) -> dict:
    # built as one dict literal per kind (keys in the order of the output contract), not grown key by key
    global _last_sec, _last_prefix
    sec, ns = divmod(msg.ts_ns, 1_000_000_000)  # rfc3339(), inline: one call less per record
    if sec != _last_sec:
        _last_sec = sec
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    ts = "%s.%06dZ" % (_last_prefix, ns // 1000)
    # the "conn" object of the connection's last record while its role (Conn.role, inline), tuple and attribution
    # stay the same
    key = (conn.pairer.role if conn.h2 is None else conn.h2.role, conn.local, conn.peer, conn.attr)
    co = conn.rec_conn if key == conn.rec_key else _conn_object(conn, key)
    if msg.kind == "request":
        path = msg.path
        if path is not None:
            last = conn.rec_path  # _path(), inline for the request: its response repeats the path
            path = last[2] if last is not None and last[1] is redactor and last[0] == path else _path(conn, redactor, path)
        rec = {
            "type": "http", "ts": ts, "pid": conn.pid, "tid": ev.tid, "comm": conn.comm, "lib": conn.lib,
            "direction": direction, "conn": co, "proto": msg.proto, "kind": "request",
            "method": msg.method, "path": path, "authority": msg.authority,
        }
    else:
        req = msg.request
        rec = {
            "type": "http", "ts": ts, "pid": conn.pid, "tid": ev.tid, "comm": conn.comm, "lib": conn.lib,
            "direction": direction, "conn": co, "proto": msg.proto, "kind": msg.kind,
            "status": msg.status, "reason": msg.reason, "latency_ms": msg.latency_ms,
            "request": (
                {"method": req.method, "path": _path(conn, redactor, req.path) if req.path is not None else None}
                if req is not None else None
            ),
        }
    if msg.stream is not None:
        rec["stream"] = msg.stream
    rec["headers"] = redactor.headers(msg.headers)
    rec["truncated"] = msg.truncated
    extra = msg.extra
    if extra:
        rec.update(extra)
        if "mcp" in extra:
            _mcp_tail(rec, redactor)
    return rec


def _mcp_tail(rec: dict, redactor: Redactor) -> None:
    """An MCP record's session redacted when the Mcp-Session-Id header is (the C http_record calls it too)."""
    if redactor.is_secret_name("mcp-session-id") and not redactor.show_secrets:
        _redact_mcp_session(rec, redactor)


def _redact_mcp_session(rec: dict, redactor: Redactor) -> None:
    """mcp.session is the Mcp-Session-Id header: redacted whenever that header is."""
    m = rec["mcp"]
    objs = [dict(o) for o in (m if isinstance(m, list) else [m])]  # the message's own dicts stay intact
    for o in objs:
        if o.get("session"):
            o["session"] = redactor.value(o["session"])
    rec["mcp"] = objs if isinstance(m, list) else objs[0]


if redact._recfast is not None:
    http_record = redact._recfast.Recorder(http_record_py, _mcp_tail, vars(redact)).http_record
else:
    http_record = http_record_py


def simple(type_: str, **fields) -> dict:
    return {"type": type_, "ts": rfc3339(time.time_ns()), **fields}
