"""Request/response pairing for one connection (HTTP/1.x: responses come back in request order).

Directions are seen from the traced process: "in" is what it read, "out" what it wrote.  Requests
are queued per direction; a response on the opposite direction answers the oldest one.

Policy after lost data (:meth:`Pairer.reset`).  A gap can lose whole requests or whole responses,
after which plain FIFO pairing would stay shifted for the rest of a keep-alive connection.  Pending
requests are therefore kept but marked *stale*: a later response pairs with the oldest request that
arrived after the reset if there is one (the stale ones are then dropped and counted in
``unpaired``), otherwise with the oldest stale one.  For the usual one-request-at-a-time traffic
this is exact whichever side lost data:

* response side lost R1's response: R1 is stale, R2 arrives fresh, its response pairs with R2;
* request side lost bytes of R2 while R1 waited: R1's response pairs with R1 (no fresh request).

Pipelined traffic across a gap may still be mispaired; nothing in the bytes can tell.
"""

from __future__ import annotations

from .model import HttpMessage

__all__ = ["Pairer", "MAX_PENDING"]

MAX_PENDING = 256  # requests waiting for a response, per direction
_EXACT_NS = 1 << 40  # below it (~18 min) the float d / 1e6 is never near enough a rounding tie to round otherwise
_OPPOSITE = {"in": "out", "out": "in"}
_IDX = {"in": 0, "out": 1}


class Pairer:
    """Pairs the responses of one connection with their requests (one Pairer per connection).

    Attributes: ``unpaired`` counts requests dropped without a response (queue bound, stale after
    a reset) and responses for which no request was pending.
    """

    __slots__ = ("_q", "_stale", "role", "unpaired", "max_pending")

    def __init__(self, *, max_pending: int = MAX_PENDING):
        # per direction ("in" = 0, "out" = 1): a plain list, not a deque: the queue is almost always 0 or 1
        # request long, and an empty deque costs ~600 bytes per connection where a list costs 56
        self._q: tuple[list[HttpMessage], list[HttpMessage]] = ([], [])
        self._stale = [0, 0]  # the first N requests of each queue predate a reset
        #: "server" if requests arrive "in", "client" if they go "out", None before any message (an attribute, not a
        #: property: records.http_record reads it for every record)
        self.role: str | None = None
        self.unpaired = 0
        self.max_pending = max(1, max_pending)

    def on_message(self, msg: HttpMessage, direction: str) -> HttpMessage:
        """Queue a request, or attach ``request``/``latency_ms`` to a response. Returns ``msg``."""
        if msg.kind == "request":
            d = _IDX[direction]
            q = self._q[d]
            if len(q) >= self.max_pending:
                del q[0]
                self.unpaired += 1
                if self._stale[d]:
                    self._stale[d] -= 1
            q.append(msg)
            if self.role is None:
                self.role = "server" if direction == "in" else "client"
            return msg
        if self.role is None:
            self.role = "server" if direction == "out" else "client"
        src = 1 - _IDX[direction]
        q = self._q[src]
        if not q:
            self.unpaired += 1
            return msg
        stale = self._stale[src]
        st = msg.status
        if st is not None and 100 <= st < 200 and st != 101:
            # an interim response (100 Continue, 103 Early Hints; not 101) is followed by the final one
            req = q[stale] if len(q) > stale else q[0]
        else:
            if stale and len(q) > stale:  # fresh requests exist: the stale ones lost their answer
                del q[:stale]
                self.unpaired += stale
                stale = 0
            req = q.pop(0)
            self._stale[src] = stale - 1 if stale else 0
        msg.request = req
        d = msg.ts_ns - req.ts_ns
        if 0 <= d < _EXACT_NS:
            # round(d / 1e6, 3) from integers: whole microseconds, rounded to nearest (0.17 µs where round()
            # with ndigits costs 0.31); a tie (…500 ns: the float d / 1e6 decides which way round() goes) and
            # negative or huge differences take round() itself
            us, ns = divmod(d, 1000)
            msg.latency_ms = (us + (ns > 500)) / 1000 if ns != 500 else round(d / 1e6, 3)
        else:
            msg.latency_ms = round(d / 1e6, 3)
        return msg

    def response_to(self, direction: str, skip: int = 0) -> str | None:
        """Method of the request that the next response on ``direction`` answers.

        ``skip`` final responses already parsed but not yet given to :meth:`on_message` are skipped
        (pipelining; :class:`~hdrlog.http1.Http1Parser` passes it when its callable accepts it).
        """
        src = 1 - _IDX[direction]
        q = self._q[src]
        stale = self._stale[src]
        i = (stale if len(q) > stale else 0) + skip
        if i < len(q):
            return q[i].method
        return None

    def _response_to_in(self, skip: int = 0) -> str | None:
        return self.response_to("in", skip)

    def _response_to_out(self, skip: int = 0) -> str | None:
        return self.response_to("out", skip)

    def responder(self, direction: str):
        """``response_to`` callable for the Http1Parser of ``direction`` (supports ``skip``): a bound method
        (64 bytes per parser, where a closure or functools.partial costs 150-250)."""
        return self._response_to_in if direction == "in" else self._response_to_out

    def reset(self) -> None:
        """Data was lost on this connection: mark all pending requests stale (see module doc).

        Give the messages returned by the parser's ``gap()`` to :meth:`on_message` first, so a
        truncated response still consumes its request.
        """
        self._stale[0] = len(self._q[0])
        self._stale[1] = len(self._q[1])

    def pending(self, direction: str) -> int:
        """Requests of ``direction`` still waiting for a response."""
        return len(self._q[_IDX[direction]])
