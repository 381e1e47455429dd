"""Connection tracking: kernel events → per-connection parsers and pairing → HTTP messages.

A connection is (pid, TLS object address). Its tuple comes from the events: exact when a socket was seen
inside the TLS call on the same thread, inferred (and said so) for memory-BIO servers. Lost or truncated
data is passed to the parsers as a gap so they resynchronise instead of mis-framing.

In C where built (``_h1feed``): a Tracker's ``on_event`` for a known connection's data event (``Track``), the
HTTP/1 feed (``http1._CFEED``) and pairing/emitting (``Deliverer``); the Python code here stays the reference and runs
everything they decline (tests/test_h1feed.py compares the two).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrlog.events import Attr, Dir, Event, Kind
from hdrlog import h2
from hdrlog.fdsock import FdSockets
from hdrlog.http1 import _CFEED, Http1Parser
from hdrlog.mcp import link as mcp_link
from hdrlog.model import HttpMessage
from hdrlog.pairing import Pairer

CHUNK = 16384  # HDRLOG_CHUNK in probes/common.bpf.c
SNIFF_KEEP = 64 * 1024  # bytes per direction kept while a connection's protocol is undecided
TRIM_NS = 2_000_000_000  # idle time after which a connection's HTTP/1 parsers free their llhttp state

ATTRIBUTION = {
    Attr.NONE: None,
    Attr.IN_CALL: "socket",
    Attr.RECV_BEFORE: "recv-before",
    Attr.SEND_AFTER: "send-after",
    Attr.GO_FD: "go-fd",
}
# exact attributions replace inferred ones; inferred ones never replace exact ones
_STRENGTH = {Attr.NONE: 0, Attr.RECV_BEFORE: 1, Attr.SEND_AFTER: 1, Attr.IN_CALL: 2, Attr.GO_FD: 2}
DIRECTION = {Dir.IN: "in", Dir.OUT: "out"}
_DATA, _CLOSE = int(Kind.DATA), int(Kind.CLOSE)  # plain ints for the per-event comparisons
_NONE, _LINK_NEXT = int(Attr.NONE), int(Attr.LINK_NEXT)


@dataclass(slots=True)
class Conn:
    id: str
    pid: int
    addr: int
    lib: str
    comm: str
    local: str | None = None
    peer: str | None = None
    attr: int = Attr.NONE
    last_ns: int = 0
    pairer: Pairer = field(default_factory=Pairer)
    parsers: dict = field(default_factory=dict)
    messages: int = 0
    gaps: int = 0
    body_hook: Callable | None = None  # opt-in body capture (MCP), given to every parser
    h2: h2.H2Conn | None = None  # set once the connection is seen to speak HTTP/2
    # direction -> [(data, ts)] while the protocol is undecided; None once decided (or before): memory per
    # tracked connection matters (10,000 idle keep-alive connections), an empty dict costs 64 bytes, a set 216
    pre: dict | None = None
    seen: tuple = ()  # directions that carried data
    # records.http_record's caches: the "conn" object while (role, local, peer, attr) stay the same (shared
    # by the records, never mutated: a change builds a new one), and the last path redacted (raw, redactor,
    # redacted): a response repeats its request's path
    rec_key: tuple | None = None
    rec_conn: dict | None = None
    rec_path: tuple | None = None

    @property
    def role(self) -> str | None:
        return self.pairer.role if self.h2 is None else self.h2.role

    @property
    def non_http(self) -> bool:
        """Carried data but no HTTP/1 or HTTP/2 message, and no parser found a message start (TLS used for
        another protocol: SMTP, a custom RPC, random bytes); counted in the summary, never a record."""
        return (bool(self.seen) and not self.messages and self.h2 is None
                and all(p.state in ("detect", "not-http") for p in self.parsers.values()))

    @property
    def attribution(self) -> str | None:
        return ATTRIBUTION.get(self.attr)

    def parser(self, direction: str) -> Http1Parser:
        p = self.parsers.get(direction)
        if p is None:
            # a response parser asks which method it answers (HEAD has no body), also when pipelined
            p = self.parsers[direction] = Http1Parser(response_to=self.pairer.responder(direction),
                                                      body=self.body_hook, takes_skip=True)
        return p

    def feed(self, direction: str, data: bytes, ts_ns: int) -> list[HttpMessage]:
        """Plaintext of one direction: to HTTP/2 once detected, else to the HTTP/1 parser, which
        stays in charge while it has found HTTP/1 (sniffing costs nothing then)."""
        p = self.parsers.get(direction)
        if p is not None and p.state == "http":  # the common case: HTTP/1 already found
            return p.feed(data, ts_ns)
        if self.h2 is not None:
            return self.h2.parsers[direction].feed(data, ts_ns)
        if p is None:
            p = self.parser(direction)
        if p.state == "detect" or p.state == "not-http":
            first = direction not in self.seen
            if first:
                self.seen += (direction,)
            s = h2.sniff(data)
            if self.pre is None:
                self.pre = {}
            q = self.pre.get(direction)
            if s == "no" and q and sum(len(d) for d, _ in q) < len(h2.PREFACE):
                # a preface split across reads (q holds every chunk since the first while undecided)
                joined = b"".join(d for d, _ in q) + data
                if h2.sniff(joined) == "preface":
                    del self.pre[direction]
                    return self._to_h2(direction, joined, ts_ns, exact=True)
            if s == "preface" or s == "frames":
                return self._to_h2(direction, data, ts_ns, exact=s == "preface" and first)
            q = self.pre.setdefault(direction, [])
            q.append((data, ts_ns))
            while len(q) > 1 and sum(len(d) for d, _ in q) > SNIFF_KEEP:
                q.pop(0)
            msgs = p.feed(data, ts_ns)
            if p.state not in ("detect", "not-http"):
                self.pre.pop(direction, None)
                if not self.pre:
                    self.pre = None
            return msgs
        if direction not in self.seen:
            self.seen += (direction,)
        return p.feed(data, ts_ns)

    def _to_h2(self, direction: str, data: bytes, ts_ns: int, exact: bool) -> list[HttpMessage]:
        other = "out" if direction == "in" else "in"
        op = self.parsers.get(other)
        if op is not None and op.state not in ("detect", "not-http"):
            if self.pre is not None:  # the other direction really is HTTP/1: not an h2 connection
                self.pre.pop(direction, None)
            return self.parsers[direction].feed(data, ts_ns)
        c = self.h2 = h2.H2Conn(exact=exact, body_hook=self.body_hook)
        self.parsers = dict(c.parsers)
        out: list[HttpMessage] = []
        pre = self.pre or {}
        for d, t in pre.pop(other, ()):  # the other direction's earlier chunks came first
            out += c.parsers[other].feed(d, t)
        self.pre = None
        out += c.parsers[direction].feed(data, ts_ns)
        return out

    def learn(self, ev: Event) -> None:
        """Exact attributions always apply; an inferred one only fills an unknown tuple."""
        if ev.peer is None:
            return
        strength = _STRENGTH.get(ev.attr, 0)
        if strength < 2 and ev.local is not None and ev.local.endswith(":0"):
            # inferred from a socket being torn down (local port already released): seen with uvicorn,
            # whose next TLS handshake runs right after the previous connection's last recv
            return
        if strength == 2 or strength > _STRENGTH.get(self.attr, 0):
            self.local, self.peer, self.attr = ev.local, ev.peer, ev.attr


Emit = Callable[[Conn, str, HttpMessage, Event], None]


def _deliver_one(c: Conn, direction: str, m: HttpMessage, ev: Event, emit: Emit) -> None:
    """One message of a connection to pairing (HTTP/1), MCP linking, the count and emit."""
    if m.proto != "h2":  # h2 pairs by stream id in hdrlog.h2
        m = c.pairer.on_message(m, direction)
    if m.extra and m.request is not None and "mcp" in m.extra:
        mcp_link(m)
    c.messages += 1
    emit(c, direction, m, ev)


def _c_deliver():
    """_h1feed's Deliverer.deliver (Tracker.on_event's loop over an HTTP/1 chunk's messages in C), or None."""
    try:
        from hdrlog import _h1feed

        return _h1feed.Deliverer(Conn, Pairer, HttpMessage, mcp_link, _deliver_one).deliver
    except (ImportError, AttributeError, TypeError):
        return None


_DELIVER = _c_deliver()


class Tracker:
    """Feeds events to connections; calls emit(conn, direction, message, event) for every message."""

    def __init__(self, emit: Emit, *, lib_of_pid: Callable[[int], str], max_bytes: int = 16384,
                 idle_timeout_s: float = 300.0, max_conns: int = 100_000, body_hook: Callable | None = None):
        self.emit = emit
        self.lib_of_pid = lib_of_pid
        self.max_bytes = max_bytes
        self.idle_ns = int(idle_timeout_s * 1e9)
        self.max_conns = max_conns
        self.body_hook = body_hook  # e.g. hdrlog.mcp.Mcp(): bodies of MCP-looking messages only
        self.conns: dict[tuple[int, int], Conn] = {}
        self._ids = itertools.count(1)
        self.counts = {"events": 0, "gaps": 0, "truncated_calls": 0, "closed": 0, "expired": 0, "non_http": 0}
        self.fds = FdSockets()  # tuples of events that only know the fd (Go)
        self.parked: dict[int, Event] = {}  # thread id -> a write waiting for its LINK (_parked_first)
        if _TRACK is not None and type(self).on_event is Tracker.on_event:
            # on_event in C for a known connection's data (_h1feed.Track, holding the tracker weakly: the rest calls
            # the method below)
            try:
                self.on_event = _TRACK.bind(self)
            except TypeError:  # a subclass without __weakref__
                pass

    def _conn(self, ev: Event) -> Conn:
        key = (ev.pid, ev.conn)
        c = self.conns.get(key)
        if c is None:
            if len(self.conns) >= self.max_conns:
                self.expire(ev.ts_ns, force_oldest=True)
            c = self.conns[key] = Conn(
                id=f"{ev.pid}-{next(self._ids)}", pid=ev.pid, addr=ev.conn, lib=self.lib_of_pid(ev.pid),
                comm=ev.comm, body_hook=self.body_hook,
            )
        c.last_ns = ev.ts_ns
        return c

    def on_event(self, ev: Event) -> None:
        if (self.parked or ev.attr == _LINK_NEXT) and self._parked_first(ev):
            return
        self.counts["events"] += 1
        if ev.fd >= 0:
            self.fds.on_event(ev)  # fills ev.local/ev.peer from (pid, fd); forgets the fd on close
        kind = ev.kind
        if kind != _DATA:
            if kind == _CLOSE:
                c = self.conns.pop((ev.pid, ev.conn), None)
                if c is not None:
                    self.counts["closed"] += 1
                    self._flush(c, ev)
            elif kind in (Kind.HANDSHAKE, Kind.LINK):
                self._conn(ev).learn(ev)
            return
        # a data event: handled here, not in a method of its own (one call less per event), as is the look-up of a
        # known connection (Tracker._conn) and Conn.feed's first case below
        c = self.conns.get((ev.pid, ev.conn))
        if c is None:
            c = self._conn(ev)
        else:
            c.last_ns = ev.ts_ns
        peer = ev.peer
        # learn() only when the event says something new (the tuple strings come from events' cache: identity)
        if peer is not None and (peer is not c.peer or ev.local is not c.local or ev.attr != c.attr):
            c.learn(ev)
        direction = DIRECTION.get(ev.dir)
        if direction is None:
            return
        if ev.lost:
            self._lost(c, ev)
        self._on_data(c, direction, ev)

    # -- a write whose tuple comes next (copy sites: Attr.LINK_NEXT), held until then
    def _parked_first(self, ev: Event) -> bool:
        """Before `ev`: its thread's parked write goes first (after learning the tuple, when `ev` is its LINK).
        True when `ev` itself was parked."""
        held = self.parked.pop(ev.tid, None)
        if held is not None:
            held.attr = _NONE  # released: never parked again
            if ev.kind == Kind.LINK and ev.pid == held.pid and ev.conn == held.conn:
                self.on_event(ev)  # the tuple first
                self.on_event(held)
                return True
            self.on_event(held)
        if ev.kind == _DATA and ev.attr == _LINK_NEXT and (ev.pid, ev.conn) not in self.conns:
            self.parked[ev.tid] = ev
            return True
        return False

    def release_parked(self, before_ns: int | None = None) -> None:
        """Parked writes whose link has not come (a memory-BIO server sends later, or never): without a tuple."""
        for tid, ev in list(self.parked.items()):
            if before_ns is None or ev.ts_ns < before_ns:
                del self.parked[tid]
                ev.attr = _NONE
                self.on_event(ev)

    def _lost(self, c: Conn, ev: Event) -> None:
        """Events of this connection were dropped: both directions may have holes."""
        self.counts["gaps"] += 1
        c.gaps += 1
        for d in ("in", "out"):
            self._run(c, d, c.parser(d).gap(0, ev.ts_ns), ev)
        c.pairer.reset()  # pending requests may have lost their responses (or vice versa)

    def _on_data(self, c: Conn, direction: str, ev: Event, tried: bool = False) -> None:
        """A data event's plaintext to its direction's parser, the messages to pairing and emit (``tried``: the C
        feed declined it already)."""
        data = ev.data
        if data:
            p = c.parsers.get(direction)
            # HTTP/1 already found on this direction: straight to its parser, the C feed first (http1._CFEED: it takes
            # the common case whole, or declines having done nothing)
            msgs = _CFEED(p, data, ev.ts_ns) if _CFEED is not None and p is not None and not tried else None
            if msgs is None:
                msgs = (p.feed(data, ev.ts_ns) if p is not None and p.state == "http"
                        else c.feed(direction, data, ev.ts_ns))
            if msgs:
                if c.h2 is None:
                    op = c.parsers.get("out" if direction == "in" else "in")
                    # op._held: Http1Parser.holding without the property's call (once per message here)
                    if op is not None and op._held is not None and any(
                            m.kind == "response" and (m.status or 0) >= 200 for m in msgs):
                        # a final response to a request still held for its body (nginx answers before
                        # reading a POST body): the request goes to pairing first (not for 100 Continue)
                        self._run(c, "out" if direction == "in" else "in", op.release_held(), ev)
                    if _DELIVER is not None:  # the loop below in C
                        _DELIVER(c, direction, msgs, ev, self.emit)
                    else:  # _run inline for HTTP/1 (one call less per message)
                        on_message = c.pairer.on_message
                        emit = self.emit
                        for m in msgs:
                            if m.proto != "h2":
                                m = on_message(m, direction)
                            if m.extra and m.request is not None and "mcp" in m.extra:
                                mcp_link(m)
                            c.messages += 1
                            emit(c, direction, m, ev)
                else:
                    self._run(c, direction, msgs, ev)
        n = len(data)
        if ev.offset + n < ev.length:
            self._truncated(c, direction, ev, n)

    def _truncated(self, c: Conn, direction: str, ev: Event, n: int) -> None:
        """The call moved more than was captured (n bytes of data from ev.offset): a gap after its last captured
        chunk."""
        end = ev.offset + n
        if n < CHUNK or end >= self.max_bytes:
            self.counts["truncated_calls"] += 1
            self._run(c, direction, c.parser(direction).gap(ev.length - end, ev.ts_ns), ev)

    def _run(self, c: Conn, direction: str, msgs: list[HttpMessage], ev: Event) -> None:
        if _DELIVER is not None and msgs.__class__ is list:
            _DELIVER(c, direction, msgs, ev, self.emit)
            return
        for m in msgs:
            _deliver_one(c, direction, m, ev, self.emit)

    def _flush(self, c: Conn, ev: Event) -> None:
        for d, p in list(c.parsers.items()):
            self._run(c, d, p.close(ev.ts_ns), ev)
        if c.non_http:
            self.counts["non_http"] += 1

    def non_http_connections(self) -> int:
        """Closed connections that carried no HTTP, plus the open ones that have not so far."""
        return self.counts["non_http"] + sum(1 for c in self.conns.values() if c.non_http)

    def expire(self, now_ns: int, force_oldest: bool = False) -> int:
        """Forget connections idle longer than the timeout (or the oldest tenth when over capacity); connections
        idle longer than TRIM_S drop their HTTP/1 parsers' llhttp state between messages (memory)."""
        if force_oldest:
            victims = sorted(self.conns.items(), key=lambda kv: kv[1].last_ns)[: max(1, len(self.conns) // 10)]
        else:
            limit = now_ns - self.idle_ns
            trim = now_ns - TRIM_NS
            victims = []
            for k, c in self.conns.items():
                if c.last_ns < trim:
                    if c.last_ns < limit:
                        victims.append((k, c))
                    elif c.h2 is None:
                        for p in c.parsers.values():
                            p.trim()
        for k, _ in victims:
            del self.conns[k]
        self.counts["expired"] += len(victims)
        return len(victims)


def _c_track():
    """_h1feed's Track (Tracker.on_event for a known connection's data in C), or None."""
    from hdrlog import http1

    try:
        from hdrlog import _h1feed

        if http1._FEEDER is None or _DELIVER is None:
            return None
        return _h1feed.Track(Event, Conn, Tracker.on_event, http1._FEEDER, _DELIVER.__self__)
    except (ImportError, AttributeError, TypeError):
        return None


_TRACK = _c_track()
