"""MCP (Model Context Protocol) over streamable HTTP: which messages carry it, body reassembly, and
the identifying elements of each JSON-RPC message.

MCP is JSON-RPC 2.0 POSTed to one endpoint, answered with JSON or an SSE stream (``text/event-stream``);
a GET opens a server-to-client SSE stream and a DELETE ends the session.  The parsers (HTTP/1 and
HTTP/2) call :class:`Mcp` (their opt-in ``body`` hook) once per header block.  For ordinary traffic it
only scans the header names and returns None: no body byte is copied.  A message is a candidate when
its Content-Type is JSON or an event stream, or it has ``Mcp-*`` headers; its body is then collected
(at most ``limit`` bytes, 256 KiB by default, beyond that the record says ``"truncated": true``) and
the message is held back until the body ends.  If the first bytes of a candidate body do not look
like JSON-RPC (no ``"jsonrpc"`` in its first 512 bytes) and there is no ``Mcp-*`` header, collection
stops there and the message goes out unchanged.  The SSE stream answering a GET is not held (it may
stay open for hours): its record carries the session and version from the headers.

What is logged (``msg.extra["mcp"]``): ``session`` (Mcp-Session-Id), ``version`` (MCP-Protocol-Version,
or initialize's protocolVersion), and per JSON-RPC message ``method``, ``id``, ``tool`` (tools/call),
``resource`` (resources/read, subscribe, unsubscribe), ``prompt`` (prompts/get), ``error`` (the
JSON-RPC error code) and ``is_error`` (a tool result's isError).  A body with several messages (a
batch, or an SSE stream with several events) gives a list of such objects.  Responses get
``method``/``tool``/… of the request with the same id (:func:`link`).  Tool arguments, results and
error messages are not logged unless ``payloads`` is set (``--mcp-payloads``: ``params``, ``result``
and ``error_message`` are added).
"""

from __future__ import annotations

import json
import re

from hdrlog.headernames import NameClasses

__all__ = ["Mcp", "BodySink", "BODY_LIMIT", "messages_from_body", "summarize", "link", "parse_sse"]

BODY_LIMIT = 256 * 1024
SNIFF_BYTES = 512
_RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})
_SSE_LINE = re.compile(rb"\r\n|\r|\n")


def _int(text: str):
    """JSON integers beyond 64 bits stay text: orjson (the record writer) refuses them (found by fuzzing)."""
    v = int(text)
    return v if -(1 << 63) <= v < 1 << 64 else text


_DECODER = json.JSONDecoder(parse_int=_int)
_MAX_DEPTH = 64  # payload nesting kept in records (orjson refuses more than 254 levels)


def _bounded(v, depth: int = 0):
    """v with containers nested deeper than _MAX_DEPTH replaced by a marker (payloads only)."""
    if isinstance(v, dict):
        if depth >= _MAX_DEPTH:
            return "<nested too deep>"
        return {str(k): _bounded(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        if depth >= _MAX_DEPTH:
            return "<nested too deep>"
        return [_bounded(x, depth + 1) for x in v]
    return v
_WS = " \t\r\n"


_CTYPE, _SESSION, _VERSION = 1, 2, 3
# header name as sent -> 0 or one of these classes
_NAMES = NameClasses({"content-type": _CTYPE, "mcp-session-id": _SESSION, "mcp-protocol-version": _VERSION})


class Mcp:
    """The body hook: ``mcp(msg, request_method=None)`` -> a :class:`BodySink` or None."""

    __slots__ = ("payloads", "limit", "candidates", "recognised")

    def __init__(self, *, payloads: bool = False, limit: int = BODY_LIMIT):
        self.payloads = payloads
        self.limit = limit
        self.candidates = 0
        self.recognised = 0

    def __call__(self, msg, request_method: str | None = None):
        ctype = session = version = None
        names = _NAMES
        for n, v in msg.headers:
            c = names[n]  # this runs on every message: one memoised look-up per header, no slicing or lower()
            if c:
                if c == _CTYPE:
                    ctype = v
                elif c == _SESSION:
                    session = v
                else:
                    version = v
        mcp_hdr = session is not None or version is not None  # header values are str, never None
        if ctype is None:
            if not mcp_hdr:
                return None  # the common case of a message without a body (a GET)
            ct = 0
        else:
            ct = _CTYPES.get(ctype)
            if ct is None:
                ct = _ctype_class(ctype)
        if ct == _SSE_CT:
            if msg.kind == "response" and request_method is None and msg.request is not None:
                request_method = msg.request.method
            if request_method == "GET":
                ct = 0
        if not ct:
            if mcp_hdr:
                msg.extra["mcp"] = {"session": session, "version": version}
                self.recognised += 1
            return None
        self.candidates += 1
        return BodySink(self, msg, ct == _SSE_CT, session, version, mcp_hdr)


_JSON_CT, _SSE_CT = 1, 2
_CTYPES: dict[str, int] = {}  # Content-Type value -> 0, _JSON_CT or _SSE_CT (values repeat: a per-value memo)


def _ctype_class(ctype: str) -> int:
    lc = ctype.lower()
    ct = _SSE_CT if "text/event-stream" in lc else _JSON_CT if "json" in lc else 0
    if len(_CTYPES) >= 1024:
        _CTYPES.clear()
    _CTYPES[ctype] = ct
    return ct


class BodySink:
    """Collects one message body (bounded) and annotates the message when it ends.

    ``add(data) -> bool``: False when no more bytes are wanted (not JSON-RPC, or over the limit);
    ``finish(complete)``: the body ended (complete=False: bytes were lost or the connection closed)."""

    __slots__ = ("owner", "msg", "sse", "session", "version", "mcp_hdr", "buf", "truncated", "decided", "done")

    def __init__(self, owner: Mcp, msg, sse: bool, session, version, mcp_hdr: bool):
        self.owner = owner
        self.msg = msg
        self.sse = sse
        self.session = session
        self.version = version
        self.mcp_hdr = mcp_hdr
        self.buf = b""  # the first chunk as it came while it is the only one (bytes), then a bytearray
        self.truncated = False
        self.decided = mcp_hdr
        self.done = False

    def add(self, data) -> bool:
        if self.done:
            return False
        buf = self.buf
        room = self.owner.limit - len(buf)
        if len(data) > room:
            if buf.__class__ is not bytearray:
                buf = self.buf = bytearray(buf)
            buf += data[:room]
            self.truncated = True
            if self.decided or _looks_jsonrpc(buf):
                self.finish(False)
            else:
                self.done = True
            return False
        if not buf and data.__class__ is bytes:
            # most bodies come in one chunk: kept as it is (immutable), no bytearray made and copied into
            self.buf = buf = data
        else:
            if buf.__class__ is not bytearray:
                buf = self.buf = bytearray(buf)
            buf += data
        if not self.decided and len(buf) >= SNIFF_BYTES:
            if not _looks_jsonrpc(buf):
                self.done = True
                return False
            self.decided = True
        return True

    def finish(self, complete: bool) -> None:
        """The body ended. ``complete=False``: it was cut (lost bytes, connection closed first); that only
        marks the record truncated if a JSON-RPC message is actually incomplete (an SSE stream whose
        client hung up after the last whole event is not)."""
        if self.done:
            return
        self.done = True
        raw = self.buf
        self.buf = b""
        if not self.decided and raw.find(b'"jsonrpc"', 0, SNIFF_BYTES * 2) < 0:  # _looks_jsonrpc without copies
            return
        buf = bytes(raw)
        cut = self.truncated or not complete
        msgs, partial = messages_from_body(buf, self.sse, cut, report=True)
        self.truncated = self.truncated or partial
        if not msgs and not self.mcp_hdr:
            return
        payloads = self.owner.payloads
        out = []
        for m in msgs:
            s = {"session": self.session, "version": self.version}
            s.update(summarize(m, payloads))
            v = s.pop("_version", None)
            if s["version"] is None and v is not None:
                s["version"] = v
            if self.truncated:
                s["truncated"] = True
            out.append(s)
        if not out:
            out = [{"session": self.session, "version": self.version, "truncated": True}
                   if self.truncated else {"session": self.session, "version": self.version}]
        self.msg.extra["mcp"] = out[0] if len(out) == 1 and not (self.sse and len(msgs) > 1) else out
        self.owner.recognised += 1


def _looks_jsonrpc(buf) -> bool:
    return b'"jsonrpc"' in buf[:SNIFF_BYTES * 2]


# ------------------------------------------------------------------------------------------ bodies
def parse_sse(body: bytes) -> list[str]:
    """The data of each event of an SSE body (data lines joined with newlines); a last event without
    its blank line counts too."""
    out = []
    data: list[bytes] = []
    for line in _SSE_LINE.split(body):
        if not line:
            if data:
                out.append(b"\n".join(data).decode("utf-8", "replace"))
                data = []
            continue
        if line.startswith(b"data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(b" ") else v)
        # event:, id:, retry: and comments (":...") carry no JSON-RPC
    if data:
        out.append(b"\n".join(data).decode("utf-8", "replace"))
    return out


def messages_from_body(body: bytes, sse: bool, truncated: bool = False, report: bool = False):
    """The JSON-RPC message objects in a body (JSON or SSE), best effort when it was truncated.
    With ``report``: (messages, partial) where partial says the last message was incomplete."""
    texts = parse_sse(body) if sse else [body.decode("utf-8", "replace")]
    out: list[dict] = []
    partial = False
    for i, t in enumerate(texts):
        t = t.strip()
        if not t:
            continue
        try:
            obj = _DECODER.decode(t)
        except ValueError:
            if truncated and i == len(texts) - 1:
                obj = _partial(t)
                partial = True
            else:
                continue
        if isinstance(obj, list):
            out.extend(o for o in obj if isinstance(o, dict))
        elif isinstance(obj, dict):
            out.append(obj)
    msgs = [m for m in out if m.get("jsonrpc") == "2.0" or "method" in m or "result" in m or "error" in m]
    return (msgs, partial) if report else msgs


def _partial(text: str):
    """Top-level members (and params/result members) of a JSON object cut short: each complete value
    is kept, parsing stops at the first incomplete one. A cut batch gives its complete elements."""
    n = len(text)

    def members(pos: int, depth: int):
        obj: dict = {}
        pos += 1
        while True:
            while pos < n and text[pos] in _WS + ",":
                pos += 1
            if pos >= n or text[pos] == "}":
                return obj, pos + 1
            try:
                key, pos = _DECODER.raw_decode(text, pos)
            except ValueError:
                return obj, n
            while pos < n and text[pos] in _WS:
                pos += 1
            if pos >= n or text[pos] != ":":
                return obj, n
            pos += 1
            while pos < n and text[pos] in _WS:
                pos += 1
            try:
                val, pos = _DECODER.raw_decode(text, pos)
            except ValueError:
                if depth == 0 and pos < n and text[pos] == "{" and key in ("params", "result", "error"):
                    val, pos = members(pos, 1)
                    obj[key] = val
                return obj, n
            obj[key] = val

    s = text.lstrip()
    if s.startswith("{"):
        return members(text.index("{"), 0)[0]
    if s.startswith("["):
        items = []
        pos = text.index("[") + 1
        while pos < n:
            while pos < n and text[pos] in _WS + ",":
                pos += 1
            if pos >= n:
                break
            try:
                v, pos = _DECODER.raw_decode(text, pos)
                items.append(v)
            except ValueError:
                if text[pos] == "{":
                    items.append(members(pos, 0)[0])
                break
        return items
    return None


def _s(v) -> str | None:
    return v if isinstance(v, str) else None


def summarize(m: dict, payloads: bool = False) -> dict:
    """The identifying elements of one JSON-RPC message (``_version`` from initialize, if any)."""
    out: dict = {}
    method = _s(m.get("method"))
    if method is not None:
        out["method"] = method
    mid = m.get("id")
    if isinstance(mid, (int, str)) and not isinstance(mid, bool):
        out["id"] = mid
    params = m.get("params")
    if isinstance(params, dict) and method is not None:
        if method == "tools/call":
            out["tool"] = _s(params.get("name"))
        elif method in _RESOURCE_METHODS:
            out["resource"] = _s(params.get("uri"))
        elif method == "prompts/get":
            out["prompt"] = _s(params.get("name"))
        elif method == "initialize" and _s(params.get("protocolVersion")):
            out["_version"] = params["protocolVersion"]
    if "error" in m:
        err = m["error"]
        code = err.get("code") if isinstance(err, dict) else None
        out["error"] = code if isinstance(code, int) and not isinstance(code, bool) else None
        if payloads and isinstance(err, dict) and "message" in err:
            out["error_message"] = _bounded(err["message"])
    result = m.get("result")
    if isinstance(result, dict):
        if "isError" in result:
            out["is_error"] = bool(result["isError"])
        pv = _s(result.get("protocolVersion"))
        if pv is not None:
            out["_version"] = pv
    if payloads:
        if "params" in m:
            out["params"] = _bounded(params)
        if "result" in m:
            out["result"] = _bounded(result)
    return out


_FROM_REQUEST = ("method", "tool", "resource", "prompt")


def link(resp) -> None:
    """Give a response's MCP summaries the method (tool, resource, prompt) of the request with the same
    id, and the request's session/version where the response has none."""
    req = resp.request
    if req is None:
        return
    rm = req.extra.get("mcp")
    pm = resp.extra.get("mcp")
    if rm is None or pm is None:
        return
    reqs = rm if isinstance(rm, list) else [rm]
    by_id = {r["id"]: r for r in reqs if "id" in r}
    for p in pm if isinstance(pm, list) else [pm]:
        r = by_id.get(p.get("id")) if "id" in p else (reqs[0] if len(reqs) == 1 else None)
        if r is not None and "method" not in p:
            for k in _FROM_REQUEST:
                if k in r:
                    p[k] = r[k]
            # keep the response's own keys first-class: method goes before id in the output
        base = r if r is not None else reqs[0]
        if p.get("session") is None:
            p["session"] = base.get("session")
        if p.get("version") is None:
            p["version"] = base.get("version")
