"""The stages after the kernel, wired in one place: decode → track → parse/pair → redact → record → sink.

Live capture (session.py) and replay of recorded events (replay.py) both go through Pipeline, so a fixture
replayed in a unit test exercises exactly the code a live capture runs.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable

import orjson

from hdrlog import events
from hdrlog.conntrack import Conn, Tracker
from hdrlog.events import Event
from hdrlog.mcp import Mcp
from hdrlog.model import HttpMessage
from hdrlog.records import http_record
from hdrlog.redact import Redactor
from hdrlog.sinks import open_private

_FORK = int(events.Kind.FORK)  # a plain int: comparing with the enum member costs a class lookup per event
# the C decoder called here directly (events.decode's wrapper would cost one Python call more per event)
_c_decode, _decode_py = events.c_decode, events.decode_py
_ADDRS, _COMMS = events._addr_cache, events._comm_cache


class EventRecorder:
    """Raw ring-buffer records to a JSON-lines file, for fixtures (contains plaintext: mode 0600)."""

    def __init__(self, path: str, meta: dict):
        self.f = open_private(path)
        self.f.write(orjson.dumps({"type": "hdrlog-events", "abi": events.ABI, **meta}) + b"\n")

    def write(self, raw: bytes) -> None:
        self.f.write(b'{"raw":"' + base64.b64encode(raw) + b'"}\n')

    def close(self) -> None:
        self.f.close()


class Pipeline:
    def __init__(self, sink, redactor: Redactor, *, lib_of_pid: Callable[[int], str], max_bytes: int,
                 wall_offset_ns: int = events.WALL_OFFSET_NS, recorder: EventRecorder | None = None,
                 tap: Callable[[Event, Tracker], None] | None = None, mcp_payloads: bool = False,
                 on_fork: Callable[[int, int], None] | None = None,
                 sink_error: Callable[[OSError], None] | None = None):
        self.sink = sink
        # a record write's OSError (the output's reader gone, disk full) is handed here instead of raised through
        # the ring walk: the session's guard without a wrapper's frame per record
        self.sink_error = sink_error
        self.on_fork = on_fork  # (parent pid, child task id): a traced process forked (session rescans)
        self.tap = tap  # sees every decoded event after tracking (pcap.py, doctor's probe counters)
        self.redactor = redactor
        self.wall_offset_ns = wall_offset_ns
        self.recorder = recorder
        # MCP bodies (and only those) are collected for the "mcp" record field (hdrlog.mcp)
        self.tracker = Tracker(self._emit, lib_of_pid=lib_of_pid, max_bytes=max_bytes,
                               body_hook=Mcp(payloads=mcp_payloads))
        self.messages_by_pid: Counter[int] = Counter()
        self.truncated = 0
        self.decode_errors = 0

    def on_raw(self, raw: bytes) -> None:
        if self.recorder is not None:
            self.recorder.write(raw)
        ev = _c_decode(raw, self.wall_offset_ns, Event, _ADDRS, _COMMS) if _c_decode is not None else None
        if ev is None:  # not built, or a tuple or comm not cached yet, a short record: the Python decode
            try:
                ev = _decode_py(raw, self.wall_offset_ns)
            except ValueError:
                self.decode_errors += 1
                return
        if ev.kind == _FORK:
            if self.on_fork is not None:
                self.on_fork(ev.pid, ev.conn)
            return
        self.tracker.on_event(ev)
        if self.tap is not None:
            self.tap(ev, self.tracker)

    def ring_dispatch(self) -> tuple | None:
        """What ringbuf's C walk needs to do on_raw's common case itself, one batch at a time: decode a record with
        the C decoder and hand the Event to tracker.on_event, without a Python frame of on_raw per record; a record
        the decoder declines, or a FORK event, still goes to on_raw. None (on_raw for every record) with a
        recorder or a tap, or without the C decoder."""
        if self.recorder is not None or self.tap is not None or _c_decode is None:
            return None
        return (_c_decode, self.wall_offset_ns, Event, _ADDRS, _COMMS, self.tracker.on_event, _FORK)

    def _emit(self, conn: Conn, direction: str, msg: HttpMessage, ev: Event) -> None:
        self.messages_by_pid[conn.pid] += 1
        if msg.truncated:
            self.truncated += 1
        rec = http_record(conn, direction, msg, ev, self.redactor)
        try:
            self.sink.write(rec)
        except OSError as exc:
            if self.sink_error is None:
                raise
            self.sink_error(exc)
