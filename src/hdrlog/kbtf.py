"""Offsets of a few kernel struct members, read from the running kernel's BTF (/sys/kernel/btf/vmlinux).

bcc compiles the probes against the distribution's kernel headers, which may not match the running
kernel; a member beyond struct sock_common's long-stable head is only read at the offset found here
(passed to the probes as a -D flag), and the probes fall back to what needs no offset when it is unknown.

The type section is not walked (~0.05 s in Python for 126k types): the struct's record is found by its
name's string offset, and accepted only if it is a well-formed STRUCT record, 4-byte aligned in the type
section, whose members' names are all valid strings and that is the only one with that name.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

VMLINUX = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
KIND_INT, KIND_STRUCT, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST = 1, 4, 8, 9, 10
_HDR = struct.Struct("<HBBIIIII")
_U32x3 = struct.Struct("<III")


class Member(NamedTuple):
    offset: int  # bytes from the struct's start
    size: int  # bytes (0 when the member's type is not a plain integer)


class Btf:
    def __init__(self, data: bytes):
        if len(data) < _HDR.size:
            raise ValueError("BTF too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise ValueError("not BTF (or not little-endian)")
        self.data = data
        self.ts, self.te = hdr_len + type_off, hdr_len + type_off + type_len
        self.ss, self.se = hdr_len + str_off, hdr_len + str_off + str_len
        if not (self.te <= len(data) and self.se <= len(data) and self.ts <= self.te and self.ss <= self.se):
            raise ValueError("BTF sections out of bounds")

    def _str(self, off: int) -> str | None:
        pos = self.ss + off
        if off < 0 or pos >= self.se:
            return None
        end = self.data.find(b"\0", pos, self.se)
        return None if end < 0 else self.data[pos:end].decode("ascii", "replace")

    def _name_offsets(self, name: str) -> list[int]:
        """Every string-section offset at which `name` is a whole string."""
        needle, out, pos = name.encode() + b"\0", [], self.ss
        while True:
            i = self.data.find(needle, pos, self.se)
            if i < 0:
                return out
            if i == self.ss or self.data[i - 1] == 0:
                out.append(i - self.ss)
            pos = i + 1

    def _struct_records(self, name: str) -> list[int]:
        found = []
        for noff in self._name_offsets(name):
            key, pos = struct.pack("<I", noff), self.ts
            while True:
                i = self.data.find(key, pos, self.te)
                if i < 0:
                    break
                pos = i + 1
                if (i - self.ts) % 4 or i + 12 > self.te:
                    continue
                _n, info, size = _U32x3.unpack_from(self.data, i)
                kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
                if kind != KIND_STRUCT or info & 0x60FF0000 or not 0 < size < 1 << 20 or \
                        i + 12 + 12 * vlen > self.te:
                    continue
                if all(self._str(_U32x3.unpack_from(self.data, i + 12 + 12 * k)[0]) is not None
                       for k in range(vlen)):
                    found.append(i)
        return found

    def member(self, struct_name: str, member: str) -> Member | None:
        """The member's byte offset and integer size, or None (not found, ambiguous, or a bitfield)."""
        recs = self._struct_records(struct_name)
        if len(recs) != 1:
            return None
        i = recs[0]
        _n, info, _size = _U32x3.unpack_from(self.data, i)
        kflag, vlen = info >> 31, info & 0xFFFF
        for k in range(vlen):
            noff, tid, off = _U32x3.unpack_from(self.data, i + 12 + 12 * k)
            if self._str(noff) != member:
                continue
            bits = off & 0xFFFFFF if kflag else off
            if (kflag and off >> 24) or bits % 8:
                return None  # a bitfield
            return Member(bits // 8, self._int_size(tid))
        return None

    def _int_size(self, tid: int) -> int:
        """Size of type id `tid` if it is an integer (through typedefs and qualifiers), else 0. Ids are
        found by walking the type section up to `tid` only when asked (rare: once per program build)."""
        for _ in range(16):
            rec = self._record(tid)
            if rec is None:
                return 0
            _n, info, size_or_type = _U32x3.unpack_from(self.data, rec)
            kind = (info >> 24) & 0x1F
            if kind == KIND_INT:
                return size_or_type
            if kind not in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST):
                return 0
            tid = size_or_type
        return 0

    def _record(self, tid: int) -> int | None:
        extra = {1: 4, 3: 12, 14: 4, 17: 4}
        per = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
        pos, cur = self.ts, 1
        while pos + 12 <= self.te:
            if cur == tid:
                return pos
            info = _U32x3.unpack_from(self.data, pos)[1]
            kind = (info >> 24) & 0x1F
            pos += 12 + extra.get(kind, 0) + per.get(kind, 0) * (info & 0xFFFF)
            cur += 1
        return None


def load(path: str = VMLINUX) -> Btf | None:
    """The running kernel's BTF, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return Btf(f.read())
    except (OSError, ValueError, struct.error):
        return None


def member(struct_name: str, member_name: str, path: str = VMLINUX) -> Member | None:
    """Offset and size of struct_name.member_name in the running kernel, or None when unknown."""
    btf = load(path)
    try:
        return btf.member(struct_name, member_name) if btf else None
    except (ValueError, struct.error):
        return None
