"""Opt-in body capture for :class:`hdrlog.http1.Http1Parser` (used for MCP): when the body hook wants a
message's body, the parser stops llhttp at the end of the header block, holds the message, frames the body
itself (Content-Length, chunked, or until close) and hands it to the hook's sink; the message is returned
once the body ends or the sink has seen enough.  Ordinary bodies never come here: llhttp skips them.
"""

from __future__ import annotations

from .model import HttpMessage

__all__ = ["BodyCapture", "is_final"]


def is_final(status: int | None) -> bool:
    """Does this response end its request's exchange? (Same rule as the Pairer: 1xx except 101 don't.)"""
    return status is None or status >= 200 or status == 101 or status < 100


class BodyCapture:
    """Mixin of Http1Parser (its slots hold the state: ``_body``, ``_sink``, ``_held``, ``_bmode``, ``_brem``,
    ``_cstate``, ``_cline``; it provides ``_out``, ``_finals``, ``_method``, ``_p``, ``state``, ``errors``,
    ``debug`` and ``_to_resync``)."""

    __slots__ = ()

    def _want_body(self, msg: HttpMessage) -> bool:
        """Ask the body hook about ``msg``; set up the held message and its framing if it wants it."""
        method = None
        if msg.kind == "response":
            st = msg.status or 0
            method = self._method
            if st < 200 or st == 204 or st == 304 or method == "HEAD" or (method == "CONNECT" and st < 300):
                return False
        try:
            sink = self._body(msg, method)
        except Exception:
            if self.debug:
                raise
            return False
        if sink is None:
            return False
        mode, length = "close" if msg.kind == "response" else None, 0
        for n, v in msg.headers:
            low = n.lower()
            if low == "transfer-encoding" and "chunked" in v.lower():
                mode = "chunked"
                break
            if low == "content-length":
                try:
                    length = int(v.strip())
                    mode = "length" if length > 0 else None
                except ValueError:
                    pass
        if mode is None:  # no body
            sink.finish(True)
            return False
        self._sink, self._held = sink, msg
        self._bmode, self._brem, self._cstate, self._cline = mode, length, "size", b""
        return True

    def release_held(self) -> list[HttpMessage]:
        """Hand over a message held for its body now: the other direction answered before the body ended
        (nginx answers `return 200` before reading a POST body), and pairing must see the request first.
        The rest of the body is still framed, no longer collected; the hook decodes what it has."""
        if self._held is None:
            return []
        self._out = out = []
        self._release(False)
        self._out = ()  # the caller owns the message now
        return out

    def _release(self, complete: bool | None) -> None:
        """Return the held message: body complete (True), cut (False) or no longer wanted (None)."""
        msg, sink = self._held, self._sink
        self._held = self._sink = None
        if sink is not None and complete is not None:
            sink.finish(complete)
        if msg is not None:
            self._out.append(msg)
            if msg.kind == "response" and is_final(msg.status):
                self._finals += 1

    def _add(self, chunk) -> None:
        if self._sink is not None and not self._sink.add(chunk):
            self._release(None)

    def _body_done(self) -> None:
        self._release(True)
        self.state = "http"
        self._p = None
        self._bmode = None

    def _body_run(self, data: bytes, pos: int):
        """State "body": frame the held message's body, hand it to its sink, then resume HTTP."""
        n = len(data)
        mode = self._bmode
        if mode == "close":
            if pos < n:
                self._add(data[pos:])
            return None
        if mode == "length":
            k = min(self._brem, n - pos)
            if k > 0:
                self._add(data[pos:pos + k])
                self._brem -= k
                pos += k
            if self._brem:
                return None
            self._body_done()
            return (data, pos) if pos < n else None
        while pos < n:  # chunked
            cs = self._cstate
            if cs == "data":
                k = min(self._brem, n - pos)
                self._add(data[pos:pos + k])
                self._brem -= k
                pos += k
                if not self._brem:
                    self._cstate = "crlf"
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._cline += data[pos:]
                if len(self._cline) > 4096:
                    self.errors += 1
                    self._to_resync()
                return None
            line = (self._cline + data[pos:nl]).rstrip(b"\r")
            self._cline = b""
            pos = nl + 1
            if cs == "crlf":
                self._cstate = "size"
            elif cs == "size":
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.errors += 1
                    self._to_resync()
                    return data, pos
                if size:
                    self._brem = size
                    self._cstate = "data"
                else:
                    self._cstate = "trailer"
            elif not line:  # the empty line after the last chunk (and trailers)
                self._body_done()
                return (data, pos) if pos < n else None
        return None
