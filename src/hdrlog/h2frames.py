"""HTTP/2 frames on the wire: frame types and flags, frame-header plausibility, and :func:`sniff`.

Framing.  DATA payloads are skipped without copying (except bodies an opt-in ``body_hook`` asks for,
used for MCP), so a capture cut inside a DATA payload costs nothing; frames other than DATA are
buffered (bounded) until complete.  Detection (:func:`sniff`) accepts the client preface or, when
attaching mid-connection, a chunk that parses as a run of plausible frames; a direction that lost
sync waits for the next chunk that starts with plausible frames.
"""

from __future__ import annotations

import struct

__all__ = ["PREFACE", "sniff", "frames_plausible"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
# flags each known frame type may carry (sniffing rejects others)
_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)

SNIFF_MAX_LEN = 1 << 20

FRAME_HDR = struct.Struct(">BHBBL")  # length (8 + 16 bits), type, flags, R + stream id

# directions of one connection: "in" = what the traced process read, "out" = what it wrote
OTHER = {"in": "out", "out": "in"}


def frame_ok(length: int, ftype: int, flags: int, sid: int) -> bool:
    """Is this a plausible frame header (strict: used to find frame boundaries)?"""
    if ftype > 9 or flags & ~_FLAGS[ftype] or sid & 0x80000000 or length > SNIFF_MAX_LEN:
        return False
    if ftype in (SETTINGS, PING, GOAWAY):
        if sid:
            return False
        if ftype == SETTINGS:
            return length % 6 == 0 and not (flags & ACK and length)
        return length == 8 if ftype == PING else length >= 8
    if ftype == WINDOW_UPDATE:
        return length == 4
    if not sid:
        return False
    if ftype == RST_STREAM:
        return length == 4
    if ftype == PRIORITY:
        return length == 5
    return True


def frames_plausible(data: bytes) -> bool:
    """Does ``data`` start at a frame boundary of an HTTP/2 connection (mid-connection detection)?

    Every frame header in the chunk must be plausible, and there must be at least two complete
    frames, or one complete non-DATA frame that ends the chunk exactly."""
    n = len(data)
    pos = 0
    frames = 0
    last_type = -1
    while pos + 9 <= n:
        hi, lo, t, f, sid = FRAME_HDR.unpack_from(data, pos)
        length = (hi << 16) | lo
        if not frame_ok(length, t, f, sid):
            return False
        end = pos + 9 + length
        if end > n:
            return frames >= 2
        frames += 1
        last_type = t
        pos = end
    if pos == n:
        return frames >= 2 or (frames == 1 and last_type != DATA)
    return frames >= 2


def sniff(data: bytes) -> str | None:
    """"preface" (client preface at the start), "frames" (plausible frames), "no", or None (need more)."""
    if data.startswith(PREFACE):
        return "preface"
    if len(data) < len(PREFACE) and PREFACE.startswith(data):
        return None
    return "frames" if frames_plausible(data) else "no"

