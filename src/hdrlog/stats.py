"""`hdrlog stats FILE.jsonl` and the table at the end of `attach`: what the capture says, without jq.

Per route (method + normalised path: numeric ids, UUIDs, long hex and token-like segments become {id},
the query is dropped) and per peer IP: requests, error rate (4xx/5xx, MCP errors), latency p50/p95/p99,
bytes where Content-Length says; per header name: distinct values and the most frequent ones (a
redacted value is only ever its <redacted:…> fingerprint, as written); MCP: calls per method and tool,
errors, sessions.

Memory stays bounded on long runs: latencies are a reservoir sample per group (RESERVOIR), distinct
header values are counted up to MAX_VALUES per header, routes and peers beyond MAX_GROUPS fold into
"other".

As `attach`'s end-of-run observer (Stats.observe) a live record is counted in batches (statsbatch) or, with the
C module, at once in C (_statsfast.Acc, Stats.fast): the same numbers as Stats.add record by record, the
random generator of the reservoirs drawn the same way (tests/test_stats_batch.py, tests/test_statsfast.py).
The C path reads RESERVOIR when its Stats is made (the Python one at each latency).
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

from hdrlog import statsbatch
from hdrlog.errors import HdrlogError
from hdrlog.redact import Headers

try:
    from hdrlog import _statsfast  # C: Stats.observe, JsonlSink.write, OutputSink.write (see its docstring)
except ImportError:  # not built: the Python code below does it all
    _statsfast = None

_ATOMS = statsbatch.ATOMS

RESERVOIR = 20000
BATCH = 256  # records Stats.observe keeps before aggregating them (statsbatch)
MAX_VALUES = 1000
MAX_GROUPS = 2000
_MAX_KEYS = 65536  # (method, path, peer) -> groups cache of Stats._groups
OTHER = "other"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(?=.*\d)[0-9a-fA-F]{8,}$")
_NUM = re.compile(r"^\d+$")
_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~=]{20,}$")
_REDACTED = re.compile(r"<redacted:[0-9a-f]{8}>")
_norm_cache: dict[str, str] = {}


def normalise_path(path: str | None) -> str:
    """/users/42/orders/9f8e7d6c5b4a3f21?x=1 → /users/{id}/orders/{id}"""
    if path is None:
        return "?"
    hit = _norm_cache.get(path)
    if hit is not None:
        return hit
    bare = path.split("?", 1)[0].split("#", 1)[0]
    if len(_norm_cache) > 65536:
        _norm_cache.clear()
    out = _norm_cache.get(bare)  # the same path with another query (every request's, in much traffic)
    if out is None:
        out = _norm_cache[bare] = _normalise_bare(bare)
    _norm_cache[path] = out
    return out


def _normalise_bare(bare: str) -> str:
    if bare.startswith(("http://", "https://")):  # absolute-form (proxies): keep the path part
        rest = bare.split("://", 1)[1]
        bare = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    segs = []
    for seg in bare.split("/"):
        if seg and (_NUM.match(seg) or _UUID.match(seg) or _HEX.match(seg) or _TOKEN.match(seg)
                    or _REDACTED.search(seg)):
            seg = "{id}"
        segs.append(seg)
    return "/".join(segs) or "/"


def peer_ip(addr: str | None) -> str:
    """"10.0.0.5:443" → "10.0.0.5", "[::1]:8443" → "::1", None → "?"."""
    if not addr:
        return "?"
    if addr.startswith("["):
        return addr[1:addr.index("]")] if "]" in addr else addr
    return addr.rsplit(":", 1)[0]


def percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def _content_length(rec: dict) -> int | None:
    hs = rec.get("headers")
    if type(hs) is Headers:  # a live record: the redactor noted the first Content-Length value
        v = hs.content_length
    else:  # e.g. read back from a file: scan
        v = None
        for n, x in hs or ():
            if len(n) == 14 and n.lower() == "content-length":  # len first: lower() on every name cost ~0.1 µs
                v = x
                break
    return statsbatch.content_length_value(v)


def mcp_items(rec: dict) -> list[dict]:
    """The MCP summaries of a record (mcp.py writes one object, or a list for a batch / an SSE stream)."""
    m = rec.get("mcp")
    if isinstance(m, dict):
        return [m]
    if isinstance(m, list):
        return [x for x in m if isinstance(x, dict)]
    return []


def mcp_tool(m: dict) -> str | None:
    """What a call is about: the tool (tools/call), resource or prompt."""
    for k in ("tool", "resource", "prompt"):
        if m.get(k):
            return str(m[k])
    return None


def mcp_is_error(m: dict) -> bool:
    """A JSON-RPC error ("error": its code, possibly null) or a tool result with isError."""
    return "error" in m or bool(m.get("is_error"))


def mcp_session(rec: dict, m: dict) -> str | None:
    s = m.get("session")
    if s:
        return str(s)
    for n, v in rec.get("headers") or ():
        if n.lower() == "mcp-session-id":
            return v
    return None


@dataclass
class Group:
    requests: int = 0
    responses: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    mcp_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seen_latencies: int = 0
    req_bytes: int = 0
    req_bytes_known: int = 0
    resp_bytes: int = 0
    resp_bytes_known: int = 0
    statuses: Counter = field(default_factory=Counter)

    def latency(self, ms: float, rng: random.Random) -> None:
        self.seen_latencies += 1
        if len(self.latencies) < RESERVOIR:
            self.latencies.append(ms)
        else:
            j = rng.randrange(self.seen_latencies)
            if j < RESERVOIR:
                self.latencies[j] = ms

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        count = max(self.requests, self.responses)
        errors = self.errors_4xx + self.errors_5xx + self.mcp_errors
        out = {
            "requests": count,
            "responses": self.responses,
            "errors": errors,
            "error_rate": round(errors / self.responses, 4) if self.responses else None,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "mcp_errors": self.mcp_errors,
            "latency_ms": {f"p{int(q * 100)}": (round(v, 3) if (v := percentile(lat, q)) is not None else None)
                           for q in (0.5, 0.95, 0.99)},
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }
        if self.req_bytes_known:
            out["request_bytes"] = {"total": self.req_bytes, "known_for": self.req_bytes_known}
        if self.resp_bytes_known:
            out["response_bytes"] = {"total": self.resp_bytes, "known_for": self.resp_bytes_known}
        return out


@dataclass
class HeaderStat:
    count: int = 0
    values: Counter = field(default_factory=Counter)
    overflow: bool = False  # more than MAX_VALUES distinct values: the count is a lower bound
    redacted: int = 0

    def add(self, value: str) -> None:
        self.count += 1
        if "<redacted:" in value:
            self.redacted += 1
        if value in self.values or len(self.values) < MAX_VALUES:
            self.values[value] += 1
        else:
            self.overflow = True


class Stats:
    """Feed records with observe(rec) (an output observer: batched) or add(rec) (at once); read result() or table().

    observe() keeps a few fields of a live record; every BATCH records, and before anything reads the statistics
    (result(), table(), and the aggregate attributes below, which are properties that count what is kept first),
    the batch is counted at once (statsbatch: counters per distinct (method, path, peer, status, Content-Length)
    instead of per record), with the same result as add() on each record in the same order.

    With the C module (_statsfast.Acc, `fast`), observe is its C method instead: a live record is counted at once
    into pending sums per group (latency reservoirs updated in place, groups made in record order), which the
    readers above flush into the Python objects first; other records go to add()."""

    #: count live records in C (_statsfast.Acc) where header statistics are off; tests compare with and without
    fast = _statsfast is not None

    def __init__(self, headers: bool = True):
        self._routes: dict[tuple[str, str], Group] = {}
        self._peers: dict[str, Group] = {}
        self.headers_on = headers
        self._headers: dict[tuple[str, str], HeaderStat] = {}
        self._mcp_calls: Counter = Counter()
        self._mcp_errors: Counter = Counter()
        self._mcp_sessions: set[str] = set()
        self._mcp_pending: dict[tuple, tuple[str, str | None]] = {}
        self._kinds: Counter = Counter()
        self._protos: Counter = Counter()
        self._lost_events = 0
        self._first_ts: str | None = None
        self._last_ts: str | None = None
        self.rng = random.Random(0)
        self._keys: dict[tuple, tuple[Group, Group]] = {}  # see _add()
        self._q: list = []  # observed, not yet counted: [atoms, Content-Length, atoms, ...] (see observe)
        self._acc = None  # _statsfast.Acc: pending sums of records counted in C (flushed by _drain)
        if headers:
            self.observe = self.add  # header values are counted record by record (HeaderStat's bounds)
        elif self.fast:
            self._acc = _statsfast.Acc(self, Headers, RESERVOIR, statsbatch.content_length_value)
            self.observe = self._acc.observe

    def _drained(name: str):  # noqa: N805 - a property factory, used in the class body only
        def get(self):
            if self._q or self._acc is not None:
                self._drain()
            return getattr(self, name)
        return property(get, doc=f"{name[1:]}, with every observed record counted")

    routes = _drained("_routes")
    peers = _drained("_peers")
    headers = _drained("_headers")
    mcp_calls = _drained("_mcp_calls")
    mcp_errors = _drained("_mcp_errors")
    mcp_sessions = _drained("_mcp_sessions")
    mcp_pending = _drained("_mcp_pending")
    kinds = _drained("_kinds")
    protos = _drained("_protos")
    lost_events = _drained("_lost_events")
    first_ts = _drained("_first_ts")
    last_ts = _drained("_last_ts")
    del _drained

    def observe(self, rec: dict) -> None:
        """As an output observer (output.OutputSink): a live record's fields are kept and counted with the next
        batch (statsbatch); any other record (from a file, a loss, with MCP items) is counted now, after those
        kept before it. With header statistics on, observe is add."""
        try:
            atoms = _ATOMS[rec["kind"]](rec)
            clen = rec["headers"].content_length  # a live record's header list (redact.Headers)
        except (KeyError, TypeError, AttributeError):
            return self.add(rec)
        if atoms[1] != "http" or "mcp" in rec:
            return self.add(rec)
        q = self._q
        q.append(atoms)
        q.append(clen)
        if len(q) >= 2 * BATCH:
            self._drain()

    def _drain(self) -> None:
        if self._acc is not None:
            self._acc.flush()  # also tells it that Python may change the groups next
            if not self._q:
                return
        q, self._q = self._q, []
        if not statsbatch.aggregate(self, q):
            for i in range(0, len(q), 2):
                self._add(statsbatch.rebuild(q[i], q[i + 1]))

    def add(self, rec: dict) -> None:
        """Count one record now (after any observed before it)."""
        if self._q or self._acc is not None:
            self._drain()
        self._add(rec)

    def _group(self, table: dict, key, factory=Group):
        g = table.get(key)
        if g is None:
            if len(table) >= MAX_GROUPS:
                key = (OTHER, OTHER) if isinstance(key, tuple) else OTHER
                g = table.get(key)
                if g is not None:
                    return g
            g = table[key] = factory()
        return g

    def _groups(self, key: tuple) -> tuple[Group, Group]:
        """(method, raw path, peer address) -> its route and peer groups: normalising the path, splitting the peer
        and two table look-ups are done once per distinct key, not per record (a response repeats its request's)."""
        groups = self._keys.get(key)
        if groups is None:
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()
            groups = self._keys[key] = self._find_groups(key)
        return groups

    def _find_groups(self, key: tuple) -> tuple[Group, Group]:
        """_groups without its cache (the C path keeps its own: _statsfast.Acc)."""
        method, path, peer_addr = key
        return self._group(self._routes, (method, normalise_path(path))), self._group(self._peers, peer_ip(peer_addr))

    def _add(self, rec: dict) -> None:
        t = rec.get("type")
        if t != "http":
            if t == "loss":
                self._lost_events = max(self._lost_events, int(rec.get("total_events") or 0))
            return
        kind = rec.get("kind")
        self._kinds[kind] += 1
        self._protos[rec.get("proto")] += 1
        ts = rec.get("ts")
        if ts:
            if self._first_ts is None or ts < self._first_ts:
                self._first_ts = ts
            if self._last_ts is None or ts > self._last_ts:
                self._last_ts = ts
        if kind == "response":
            req = rec.get("request") or {}
            method, path = req.get("method") or "?", req.get("path")
        else:
            method, path = rec.get("method") or "?", rec.get("path")
        key = (method, path, (rec.get("conn") or {}).get("peer"))
        groups = self._keys.get(key) or self._groups(key)
        clen = _content_length(rec)
        mcp_err = False
        if "mcp" in rec:
            items = mcp_items(rec)
            if items:
                mcp_err = self._mcp(rec, items, kind)
        if kind == "request":
            for g in groups:
                g.requests += 1
                if clen is not None:
                    g.req_bytes += clen
                    g.req_bytes_known += 1
        else:
            st = rec.get("status")
            lat = rec.get("latency_ms")
            if lat is not None:
                lat = float(lat)
            body = clen is not None and method != "HEAD" and st not in (204, 304)  # no body follows those
            for g in groups:
                g.responses += 1
                if st is not None:
                    g.statuses[st] += 1
                    if 400 <= st < 500:
                        g.errors_4xx += 1
                    elif st >= 500:
                        g.errors_5xx += 1
                    elif mcp_err:
                        g.mcp_errors += 1
                elif mcp_err:
                    g.mcp_errors += 1
                if lat is not None:
                    g.latency(lat, self.rng)
                if body:
                    g.resp_bytes += clen
                    g.resp_bytes_known += 1
        if self.headers_on:
            self._header_values(kind, rec.get("headers"))

    def _header_values(self, kind, headers) -> None:
        table = self._headers
        for n, v in headers or ():
            hs = table.get((kind, n.lower()))
            if hs is None:
                hs = table[(kind, n.lower())] = HeaderStat()
            hs.add(v)

    def _mcp(self, rec: dict, items: list[dict], kind: str) -> bool:
        """Count MCP calls (request) or errors (response); True if this response carries an MCP error.
        A response names its request's method/tool (mcp.link); else they are found by JSON-RPC id."""
        conn = (rec.get("conn") or {}).get("id")
        error = False
        for m in items:
            sess = mcp_session(rec, m)
            if sess:
                self._mcp_sessions.add(sess)
            method, tool = m.get("method"), mcp_tool(m)
            if kind == "request":
                if method:
                    self._mcp_calls[(method, tool)] += 1
                    if m.get("id") is not None:
                        if len(self._mcp_pending) > 100000:
                            self._mcp_pending.clear()
                        self._mcp_pending[(conn, str(m["id"]))] = (method, tool)
                continue
            pending = self._mcp_pending.pop((conn, str(m.get("id"))), None) if m.get("id") is not None else None
            if mcp_is_error(m):
                if method is None and pending is not None:
                    method, tool = pending
                self._mcp_errors[(method or "?", tool)] += 1
                error = True
        return error

    def result(self, top: int = 5) -> dict:
        if self._q or self._acc is not None:
            self._drain()
        def routes():
            rows = [{"method": k[0], "route": k[1], **g.summary()} for k, g in self._routes.items()]
            return sorted(rows, key=lambda r: (-r["requests"], r["method"], r["route"]))

        def peers():
            rows = [{"peer": k, **g.summary()} for k, g in self._peers.items()]
            return sorted(rows, key=lambda r: (-r["requests"], r["peer"]))

        headers = []
        for (kind, name), hs in sorted(self._headers.items(), key=lambda kv: (kv[0][0] or "", -kv[1].count, kv[0][1])):
            headers.append({
                "kind": kind, "name": name, "count": hs.count, "distinct": len(hs.values),
                "distinct_is_lower_bound": hs.overflow, "redacted": hs.redacted,
                "top": [{"value": v, "count": c} for v, c in hs.values.most_common(top)],
            })
        calls = sorted(self._mcp_calls.items(), key=lambda kv: -kv[1])
        mcp_total = sum(self._mcp_calls.values())
        err_total = sum(self._mcp_errors.values())
        return {
            "messages": sum(self._kinds.values()),
            "requests": self._kinds.get("request", 0),
            "responses": self._kinds.get("response", 0),
            "protocols": dict(self._protos),
            "first_ts": self._first_ts,
            "last_ts": self._last_ts,
            "lost_events": self._lost_events,
            "routes": routes(),
            "peers": peers(),
            "headers": headers,
            "mcp": {
                "calls": mcp_total,
                "errors": err_total,
                "error_rate": round(err_total / mcp_total, 4) if mcp_total else None,
                "sessions": len(self._mcp_sessions),
                "by_method_tool": [{"method": k[0], "tool": k[1], "calls": v,
                                    "errors": self._mcp_errors.get(k, 0)} for k, v in calls],
            },
        }

    # ------------------------------------------------------------------------------------ tables
    def table(self, *, limit: int = 20, top: int = 3, headers: bool = True, color: bool = False) -> str:
        r = self.result(top=top)
        out: list[str] = []
        b = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
        span = f" ({r['first_ts']} .. {r['last_ts']})" if r["first_ts"] else ""
        out.append(b(f"{r['requests']} requests, {r['responses']} responses{span}")
                   + (f"; {r['lost_events']} events lost" if r["lost_events"] else ""))
        cols = ("REQS", "ERR%", "4xx", "5xx", "p50ms", "p95ms", "p99ms", "RESP BYTES")

        def row(label: str, g: dict) -> list[str]:
            lat = g["latency_ms"]
            f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            rate = "-" if g["error_rate"] is None else f"{100 * g['error_rate']:.1f}"
            rb = g.get("response_bytes")
            return [label, str(g["requests"]), rate, str(g["errors_4xx"]), str(g["errors_5xx"]),
                    f(lat["p50"]), f(lat["p95"]), f(lat["p99"]), str(rb["total"]) if rb else "-"]

        def grid(rows: list[list[str]], left=(0,)) -> None:
            """Aligned columns (those in `left` left-aligned, numbers right-aligned), the header row bold."""
            widths = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
            out.append("")
            for n, x in enumerate(rows):
                line = "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
                out.append(b(line.rstrip()) if n == 0 else line.rstrip())

        routes = r["routes"]
        grid([["ROUTE", *cols]] + [row(f"{g['method']} {g['route']}", g) for g in routes[:limit]])
        if len(routes) > limit:
            out.append(f"... and {len(routes) - limit} more routes (--json for all)")
        peers = r["peers"]
        grid([["PEER", *cols]] + [row(g["peer"], g) for g in peers[:limit]])
        if len(peers) > limit:
            out.append(f"... and {len(peers) - limit} more peers")
        if headers and r["headers"]:
            rows = [["HEADER", "SEEN", "DISTINCT", "TOP VALUES"]]
            for h in r["headers"]:
                tops = ", ".join(f"{_short(t['value'])} ({t['count']})" for t in h["top"])
                distinct = f"{h['distinct']}{'+' if h['distinct_is_lower_bound'] else ''}"
                if h["redacted"]:
                    distinct += " fp"  # redacted: distinct fingerprints
                rows.append([f"{h['kind'][:3]} {h['name']}", str(h["count"]), distinct, tops])
            grid(rows, left=(0, 3))
        mcp = r["mcp"]
        if mcp["calls"] or mcp["errors"]:
            rate = "-" if mcp["error_rate"] is None else f"{100 * mcp['error_rate']:.1f}%"
            out.append("")
            out.append(b(f"MCP: {mcp['calls']} calls, {mcp['errors']} errors ({rate}), {mcp['sessions']} sessions"))
            rows = [["METHOD", "TOOL", "CALLS", "ERRORS"]]
            rows += [[x["method"], x["tool"] or "-", str(x["calls"]), str(x["errors"])] for x in mcp["by_method_tool"][:limit]]
            grid(rows, left=(0, 1))
        return "\n".join(out) + "\n"

    def short_table(self, limit: int = 8) -> str:
        """The end-of-attach summary: routes and peers only."""
        return self.table(limit=limit, headers=False)


def _short(v: str, n: int = 40) -> str:
    return v if len(v) <= n else v[: n - 1] + "\u2026"


def read_records(path: str):
    """http/loss records of a JSON-lines capture; a damaged line is one sentence (HdrlogError)."""
    import orjson

    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        raise HdrlogError(f"cannot read {path}: {exc.strerror or exc}.") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise HdrlogError(f"{path} line {n} is not JSON: is it an `hdrlog attach` JSON-lines output?") from None
            if not isinstance(rec, dict):
                raise HdrlogError(f"{path} line {n} is not an hdrlog record.")
            if rec.get("type") == "hdrlog-events":
                raise HdrlogError(f"{path} is a raw event recording: run `hdrlog replay {path} > out.jsonl` first, "
                                  "then `hdrlog stats out.jsonl`.")
            yield rec


def add_parser(sub) -> None:
    s = sub.add_parser(
        "stats", help="statistics of a capture: routes, peers, errors, latencies, header variability, MCP",
        description="Summarise JSON lines written by `hdrlog attach`/`replay`: per route (method + path with "
        "ids/uuids/hex replaced by {id}, query dropped) and per peer IP: requests, error rate, latency "
        "p50/p95/p99, response bytes (from Content-Length); per header: how many distinct values and the "
        "most frequent (redacted values appear only as their fingerprint); MCP calls per method and tool, "
        "errors and sessions.",
        epilog="examples:\n  hdrlog stats capture.jsonl\n  hdrlog stats --json capture.jsonl | jq '.routes[0]'\n"
        "  hdrlog attach --pid 4242 --duration 60 | hdrlog stats -\n",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    s.add_argument("file", metavar="FILE", help="a JSON-lines capture, or - for stdin")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    s.add_argument("--top", type=int, default=3, metavar="N", help="top values shown per header (default 3)")
    s.add_argument("--limit", type=int, default=20, metavar="N", help="rows per table (default 20)")
    s.add_argument("--no-headers", action="store_true", help="leave out header variability")


def run(args) -> int:
    import orjson

    st = Stats(headers=not args.no_headers)
    for rec in read_records(args.file):
        st.add(rec)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(st.result(top=args.top), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(st.table(limit=args.limit, top=args.top, headers=not args.no_headers,
                                  color=sys.stdout.isatty()))
    return 0
