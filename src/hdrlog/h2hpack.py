"""HPACK decoding (RFC 7541) for an observer of HTTP/2: one :class:`HpackDecoder` per direction.

HPACK when hdrlog attaches to an open connection.  The dynamic table then holds entries hdrlog
never saw.  The decoder starts with an empty table and records every insertion it sees; since new
entries go to the front, what it inserts is exactly the front of the real table, and any index past
its known entries refers to an entry inserted before capture started.  Such a field is shown as
``["<hpack:unknown>", "<hpack:unknown>"]`` (the value is withheld too, because without its name
hdrlog cannot tell whether it is a secret) and the message gets ``extra["hpack_incomplete"] = True``;
static-table fields and literals decode normally, and as the peer re-inserts what it uses the table
refills and messages are complete again.  Whenever header-block bytes are lost (ring-buffer loss,
a capture cut outside a DATA payload, a frame that does not parse), the table is emptied the same
way, so a missed insertion can never shift indices and produce wrong headers.  The table size
follows the encoder's dynamic table size updates, starting at 4096 on a connection seen from its
preface and with a generous bound otherwise (keeping entries the peer evicted is harmless: they are
never referenced).  SETTINGS_HEADER_TABLE_SIZE sent by the peer is recorded as the bound the encoder
may use and only caps memory: a size update above it is still followed (observer, not enforcer).
"""

from __future__ import annotations

from hpack.huffman_table import HUFFMAN_TABLE
from hpack.table import HeaderTable

__all__ = ["HpackDecoder", "HpackError", "UNKNOWN", "huffman_decode"]

UNKNOWN = "<hpack:unknown>"
DEFAULT_TABLE = 4096
OPEN_TABLE = 65536  # table bound used while the real one is unknown (attached mid-connection)
MAX_TABLE = 1 << 20  # memory cap per decoder, whatever the peer announces

# ------------------------------------------------------------------------------------------ Huffman
# hpack's decoder walks a 4-bit state machine (nghttp2's).  Two nibbles per byte in Python cost
# ~0.2 µs/byte; a table indexed by (state, byte) built from it on first use halves that.
_BYTE_TABLE: list | None = None


def _build_byte_table() -> list:
    t: list = [None] * (256 * 256)
    ht = HUFFMAN_TABLE
    for state in range(256):
        for b in range(256):
            s1, f1, o1 = ht[state * 16 + (b >> 4)]
            if f1 & 4:
                continue
            s2, f2, o2 = ht[s1 * 16 + (b & 15)]
            if f2 & 4:
                continue
            out = (bytes((o1,)) if f1 & 2 else b"") + (bytes((o2,)) if f2 & 2 else b"")
            t[(state << 8) | b] = (s2 << 8, out, f2 & 1)
    return t


class HpackError(Exception):
    pass


_HCACHE: dict[bytes, bytes] = {}  # recent Huffman strings (values such as dates repeat unindexed)
_HCACHE_MAX_KEY = 256  # only short strings are cached: 4096 entries of up to a whole header block would
# let a peer pin ~1 GiB (found by tests/test_fuzz.py's memory bound)


def huffman_decode(data) -> bytes:
    r = _HCACHE.get(data)
    if r is not None:
        return r
    r = _huffman_decode(data)
    if len(data) > _HCACHE_MAX_KEY:
        return r
    if len(_HCACHE) >= 4096:
        _HCACHE.clear()
    _HCACHE[data] = r
    return r


def _huffman_decode(data) -> bytes:
    global _BYTE_TABLE
    t = _BYTE_TABLE
    if t is None:
        t = _BYTE_TABLE = _build_byte_table()
    st = 0
    ok = 1
    out = []
    for b in data:
        e = t[st | b]
        if e is None:
            raise HpackError("invalid Huffman code")
        st, o, ok = e
        if o:
            out.append(o)
    if not ok:
        raise HpackError("incomplete Huffman code")
    return b"".join(out)


def _dec(b: bytes) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace")


_STATIC = [(n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE]
_NSTATIC = len(_STATIC)  # 61


class HpackDecoder:
    """HPACK decoding (RFC 7541) for one direction of one connection, tolerant of unknown state.

    ``exact``: the table state is known from the start of the connection.  Otherwise (attached
    mid-connection, or after lost header bytes) indices past the known entries decode to
    :data:`UNKNOWN` placeholders.  ``decode(block)`` returns ``(fields, incomplete)``; it never
    raises: on a malformed block it returns what decoded before the error, ``incomplete=True``, and
    resets the table (its insertions can no longer be trusted).
    """

    __slots__ = ("table", "sizes", "size", "max_size", "settings_max", "exact", "resets", "errors")

    def __init__(self, exact: bool = True):
        self.table: list[tuple] = []  # (name or None if unknown, value), newest first
        self.sizes: list[int] = []  # RFC 7541 entry sizes, parallel to table
        self.size = 0
        self.settings_max: int | None = None  # SETTINGS_HEADER_TABLE_SIZE the decoding peer announced
        self.exact = exact
        self.max_size = DEFAULT_TABLE if exact else OPEN_TABLE
        self.resets = 0
        self.errors = 0

    def reset(self) -> None:
        """Forget the table: header-block bytes were lost, so insertions may have been missed."""
        self.table = []
        self.sizes = []
        self.size = 0
        self.exact = False
        self.max_size = max(self.max_size, min(MAX_TABLE, max(OPEN_TABLE, self.settings_max or 0)))
        self.resets += 1

    def set_settings_max(self, value: int) -> None:
        self.settings_max = value
        if not self.exact and value > self.max_size:
            self.max_size = min(MAX_TABLE, value)

    def _resize(self, n: int) -> None:
        self.max_size = min(n, MAX_TABLE)
        self._evict(0)

    def _evict(self, room: int) -> None:
        t, sz = self.table, self.sizes
        limit = self.max_size - room
        while t and self.size > limit:
            t.pop()
            self.size -= sz.pop()

    def _insert(self, pair: tuple, size: int) -> None:
        if size > self.max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            self.table.clear()
            self.sizes.clear()
            self.size = 0
            return
        if self.size + size > self.max_size:
            self._evict(size)
        self.table.insert(0, pair)
        self.sizes.insert(0, size)
        self.size += size

    def decode(self, block: bytes) -> tuple[list[tuple[str, str]], bool]:
        fields: list[tuple[str, str]] = []
        append = fields.append
        incomplete = False
        n = len(block)
        pos = 0
        table = self.table
        static = _STATIC
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx = b & 0x7F
                    if idx == 0x7F:
                        idx, pos = _int(block, pos, 0x7F)
                    else:
                        pos += 1
                    if idx <= _NSTATIC:
                        if not idx:
                            raise HpackError("index 0")
                        append(static[idx - 1])
                        continue
                    i = idx - _NSTATIC - 1
                    if i < len(table):
                        pr = table[i]
                        if pr[0] is not None:
                            append(pr)
                            continue
                    append(_UNKNOWN_PAIR)
                    incomplete = True
                    continue
                if b & 0xC0 == 0x40:  # literal with incremental indexing
                    idx = b & 0x3F
                    mask = 0x3F
                    insert = True
                elif b & 0xE0 == 0x20:  # dynamic table size update
                    sz, pos = _int(block, pos, 0x1F)
                    self._resize(sz)
                    table = self.table
                    continue
                else:  # literal without indexing / never indexed
                    idx = b & 0x0F
                    mask = 0x0F
                    insert = False
                if idx == mask:
                    idx, pos = _int(block, pos, mask)
                else:
                    pos += 1
                if idx:
                    nm = None
                    if idx <= _NSTATIC:
                        nm = static[idx - 1][0]
                    else:
                        i = idx - _NSTATIC - 1
                        if i < len(table):
                            nm = table[i][0]
                    nsize = len(nm) if nm is not None else 0  # names are ASCII tokens when known
                else:
                    raw, pos = _string(block, pos, n)
                    nm = _dec(raw)
                    nsize = len(raw)
                raw, pos = _string(block, pos, n)
                try:
                    v = raw.decode()
                except UnicodeDecodeError:
                    v = raw.decode("utf-8", "backslashreplace")
                if nm is None:
                    incomplete = True
                    append(_UNKNOWN_PAIR)
                    pr = (None, v)
                else:
                    pr = (nm, v)
                    append(pr)
                if insert:
                    self._insert(pr, nsize + len(raw) + 32)
                    table = self.table
        except (HpackError, IndexError):  # malformed or cut block
            self.errors += 1
            self.reset()
            return fields, True
        return fields, incomplete


_UNKNOWN_PAIR = (UNKNOWN, UNKNOWN)


def _string(block: bytes, pos: int, n: int) -> tuple[bytes, int]:
    """An HPACK string literal at pos (RFC 7541 5.2): its bytes, Huffman-decoded if flagged, and the next
    position; HpackError when it runs past the end of the block (n bytes)."""
    c = block[pos]
    ln = c & 0x7F
    if ln == 0x7F:
        ln, pos = _int(block, pos, 0x7F)
    else:
        pos += 1
    end = pos + ln
    if end > n:
        raise HpackError("string past the end of the block")
    raw = block[pos:end]
    return (huffman_decode(raw) if c & 0x80 else raw), end


def _int(b: bytes, pos: int, mask: int) -> tuple[int, int]:
    v = b[pos] & mask
    pos += 1
    if v < mask:
        return v, pos
    shift = 0
    while True:
        c = b[pos]
        pos += 1
        v += (c & 0x7F) << shift
        if c < 0x80:
            return v, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer too long")

