"""`attach --metrics ADDR:PORT`: a Prometheus endpoint fed by the records hdrlog writes and its own health.

Traffic (from every http record, before output filters):
  hdrlog_http_requests_total{method,route,peer}            requests seen
  hdrlog_http_responses_total{method,route,status,peer}    responses seen
  hdrlog_http_errors_total{method,route,status,peer}       responses with status >= 400
  hdrlog_http_request_duration_seconds{method,route,peer}  histogram of response latency
  hdrlog_mcp_calls_total{method,tool}, hdrlog_mcp_errors_total{method,tool}
  hdrlog_messages_total{attribution}                       messages by how their connection was attributed
Health (read from the session once a second on the main thread, served from a snapshot):
  hdrlog_events_total, hdrlog_events_lost_total, hdrlog_events_lost_bytes_total, hdrlog_decode_errors_total,
  hdrlog_parse_gaps_total, hdrlog_truncated_calls_total, hdrlog_truncated_messages_total,
  hdrlog_connections{attribution}, hdrlog_attached_processes, hdrlog_label_overflow_total{label}

Label cardinality is bounded: route (normalised like `hdrlog stats`: ids → {id}, no query) keeps the first
MAX_ROUTES values, peer (IP only) the first MAX_PEERS, method the standard methods; the rest is "other".
MCP method/tool keep the first MAX_MCP values each.
"""

from __future__ import annotations

import threading
import time

from hdrlog.errors import HdrlogError
from hdrlog.stats import mcp_is_error, mcp_items, mcp_tool, normalise_path, peer_ip

MAX_ROUTES = 100
MAX_PEERS = 50
MAX_MCP = 100
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def parse_addr(text: str) -> tuple[str, int]:
    """"9464" → 127.0.0.1:9464; "0.0.0.0:9464"; "[::1]:9464"; ":9464" → every interface."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", t
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host == "":
        host = "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise HdrlogError(f"--metrics takes ADDR:PORT or PORT (e.g. 127.0.0.1:9464), not {text!r}.")
    return host, int(port)


class Capped:
    """Keeps the first `limit` distinct values of a label; later new values become "other"."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()
        self.overflow = 0

    def __call__(self, v: str) -> str:
        if v in self.seen:
            return v
        if len(self.seen) < self.limit:
            self.seen.add(v)
            return v
        self.overflow += 1
        return OTHER


class _Health:
    """A prometheus collector serving the last snapshot taken by MetricsServer.tick()."""

    def __init__(self):
        self.snapshot: dict = {}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.snapshot
        for name, doc, key in (
            ("hdrlog_events", "events the probes wrote to the ring buffer", "events"),
            ("hdrlog_events_lost", "events dropped because the ring buffer was full", "lost"),
            ("hdrlog_events_lost_bytes", "plaintext bytes in dropped events", "lost_bytes"),
            ("hdrlog_decode_errors", "ring-buffer records that could not be decoded", "decode_errors"),
            ("hdrlog_parse_gaps", "places where a connection's parsers resynchronised after lost data", "gaps"),
            ("hdrlog_truncated_calls", "TLS calls that moved more than --max-bytes", "truncated_calls"),
            ("hdrlog_truncated_messages", "messages whose header block was cut", "truncated_messages"),
        ):
            yield CounterMetricFamily(name, doc, value=s.get(key, 0))
        g = GaugeMetricFamily("hdrlog_connections", "connections tracked now, by attribution", labels=["attribution"])
        for attr, n in sorted((s.get("connections") or {}).items()):
            g.add_metric([attr], n)
        yield g
        yield GaugeMetricFamily("hdrlog_attached_processes", "processes with probes attached",
                                value=s.get("attached", 0))
        c = CounterMetricFamily("hdrlog_label_overflow", "label values folded into \"other\" (cardinality cap)",
                                labels=["label"])
        for label, n in sorted((s.get("overflow") or {}).items()):
            c.add_metric([label], n)
        yield c


class MetricsServer:
    """An output observer (observe(rec)) with an HTTP endpoint; bind(session) adds hdrlog's health."""

    TICK_S = 1.0

    def __init__(self, host: str, port: int, *, max_routes: int = MAX_ROUTES, max_peers: int = MAX_PEERS):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.host, self.port = host, port
        self.registry = reg = CollectorRegistry(auto_describe=True)
        self.requests = Counter("hdrlog_http_requests", "HTTP requests seen", ["method", "route", "peer"], registry=reg)
        self.responses = Counter("hdrlog_http_responses", "HTTP responses seen",
                                 ["method", "route", "status", "peer"], registry=reg)
        self.errors = Counter("hdrlog_http_errors", "HTTP responses with status >= 400",
                              ["method", "route", "status", "peer"], registry=reg)
        self.latency = Histogram("hdrlog_http_request_duration_seconds",
                                 "response header time minus request header time",
                                 ["method", "route", "peer"], buckets=BUCKETS, registry=reg)
        self.mcp_calls = Counter("hdrlog_mcp_calls", "MCP requests by method and tool", ["method", "tool"], registry=reg)
        self.mcp_errors = Counter("hdrlog_mcp_errors", "MCP error responses by method and tool",
                                  ["method", "tool"], registry=reg)
        self.messages = Counter("hdrlog_messages", "HTTP messages by connection attribution "
                                "(socket/go-fd exact; recv-before/send-after inferred; none unknown)",
                                ["attribution"], registry=reg)
        self.health = _Health()
        reg.register(self.health)
        self.route_cap = Capped(max_routes)
        self.peer_cap = Capped(max_peers)
        self.mcp_cap = Capped(MAX_MCP)
        self.tool_cap = Capped(MAX_MCP)
        self.session = None
        self._next_tick = 0.0
        self.server = None
        self.thread = None
        self._mcp_pending: dict[tuple, tuple[str, str]] = {}

    @classmethod
    def start(cls, spec: str) -> MetricsServer:
        host, port = parse_addr(spec)
        try:
            from prometheus_client import start_http_server
        except ImportError:
            raise HdrlogError("--metrics needs the prometheus_client package: pip install prometheus_client "
                              "(make setup installs it).") from None
        m = cls(host, port)
        try:
            m.server, m.thread = start_http_server(port, addr=host, registry=m.registry)
        except OSError as exc:
            raise HdrlogError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}.") from None
        m.port = m.server.server_port
        from hdrlog.session import log

        log(f"metrics on http://{host if ':' not in host else f'[{host}]'}:{m.port}/metrics")
        return m

    def bind(self, session) -> None:
        self.session = session

    # -- records ---------------------------------------------------------------------------------
    def observe(self, rec: dict) -> None:
        t = rec.get("type")
        if t != "http":
            return
        kind = rec.get("kind")
        conn = rec.get("conn") or {}
        self.messages.labels(conn.get("attribution") or "none").inc()
        if kind == "response":
            req = rec.get("request") or {}
            method, path = req.get("method"), req.get("path")
        else:
            method, path = rec.get("method"), rec.get("path")
        method = method if method in METHODS else OTHER
        route = self.route_cap(normalise_path(path))
        peer = self.peer_cap(peer_ip(conn.get("peer")))
        if kind == "request":
            self.requests.labels(method, route, peer).inc()
        else:
            status = str(rec.get("status") or 0)
            self.responses.labels(method, route, status, peer).inc()
            if (rec.get("status") or 0) >= 400:
                self.errors.labels(method, route, status, peer).inc()
            lat = rec.get("latency_ms")
            if lat is not None:
                self.latency.labels(method, route, peer).observe(lat / 1000.0)
        for m in mcp_items(rec):
            self._mcp(m, kind, conn.get("id"))
        self.tick()

    def _mcp(self, m: dict, kind: str, conn_id) -> None:
        method, tool = m.get("method"), mcp_tool(m)
        key = (conn_id, str(m["id"])) if m.get("id") is not None else None
        if kind == "request" and method:
            labels = (self.mcp_cap(str(method)), self.tool_cap(tool or ""))
            self.mcp_calls.labels(*labels).inc()
            if key is not None:
                if len(self._mcp_pending) > 100000:
                    self._mcp_pending.clear()
                self._mcp_pending[key] = labels
        elif kind == "response":
            labels = self._mcp_pending.pop(key, None) if key is not None else None
            if mcp_is_error(m):
                if labels is None:
                    labels = (self.mcp_cap(str(method or "?")), self.tool_cap(tool or ""))
                self.mcp_errors.labels(*labels).inc()

    # -- health ----------------------------------------------------------------------------------
    def tick(self, force: bool = False) -> None:
        """Refresh the health snapshot (main thread) at most once per TICK_S."""
        now = time.monotonic()
        if not force and now < self._next_tick:
            return
        self._next_tick = now + self.TICK_S
        s = self.session
        snap: dict = {"overflow": {"route": self.route_cap.overflow, "peer": self.peer_cap.overflow,
                                   "mcp_method": self.mcp_cap.overflow, "mcp_tool": self.tool_cap.overflow}}
        if s is not None:
            ps = s.probeset
            if ps is not None:
                try:
                    st = ps.stats()
                    snap.update(events=st.get("emitted", 0), lost=st.get("dropped", 0),
                                lost_bytes=st.get("dropped_bytes", 0))
                except Exception:  # noqa: BLE001 - closing: keep the previous values
                    snap.update({k: self.health.snapshot.get(k, 0) for k in ("events", "lost", "lost_bytes")})
            pipe = s.pipeline
            if pipe is not None:
                counts = pipe.tracker.counts
                conns: dict[str, int] = {}
                for c in list(pipe.tracker.conns.values()):
                    a = c.attribution or "none"
                    conns[a] = conns.get(a, 0) + 1
                snap.update(decode_errors=pipe.decode_errors, gaps=counts.get("gaps", 0),
                            truncated_calls=counts.get("truncated_calls", 0), truncated_messages=pipe.truncated,
                            connections=conns)
            snap["attached"] = len(s.targets)
        self.health.snapshot = snap

    def close(self) -> None:
        self.tick(force=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
