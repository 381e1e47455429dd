"""The message model shared by protocol parsers, pairing, redaction and sinks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class HttpMessage:
    """One HTTP request or response header block, as parsed from one direction of one connection.

    Parsers fill the wire facts; pairing fills ``latency_ms`` and ``request`` on responses.
    """

    kind: str  # "request" | "response"
    proto: str  # "http/1.0" | "http/1.1" | "h2"
    ts_ns: int  # wall-clock ns of the event in which the header block completed
    headers: list[tuple[str, str]]  # wire order, names as sent, duplicates kept
    method: str | None = None
    path: str | None = None  # request-target exactly as sent, query included
    authority: str | None = None  # requests: Host header (HTTP/1) or :authority (h2); None in responses
    status: int | None = None
    reason: str | None = None
    truncated: bool = False  # header block incomplete (capture limit or lost data)
    stream: int | None = None  # h2 stream id
    latency_ms: float | None = None
    request: HttpMessage | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)  # protocol add-ons (e.g. "mcp")
