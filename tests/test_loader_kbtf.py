"""kbtf: struct member offsets from BTF (the loader passes sock_common.skc_family and sock.sk_protocol to the
probes' raw socket tracepoints), on hand-made BTF blobs and on the running kernel's."""

from __future__ import annotations

import os
import struct

import pytest

from hdrlog import kbtf, loader


def blob(types: list[bytes], strings: list[str]) -> tuple[bytes, dict[str, int]]:
    strtab, offs = b"\0", {}
    for s in strings:
        offs[s] = len(strtab)
        strtab += s.encode() + b"\0"
    tsec = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(tsec), len(tsec), len(strtab))
    return hdr + tsec + strtab, offs


def rec(name: int, kind: int, vlen: int, size: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size)


def sock_btf(proto_off_bits: int = 532 * 8, kflag: int = 0, twice: bool = False, proto_type: int = 2):
    names = ["__u16", "unsigned short", "sock", "__sk_common", "sk_protocol", "sk_type", "sock_common",
             "skc_family"]
    o = blob([], names)[1]
    types = [
        rec(o["unsigned short"], kbtf.KIND_INT, 0, 2) + struct.pack("<I", 16),  # id 1
        rec(o["__u16"], kbtf.KIND_TYPEDEF, 0, 1),  # id 2 -> 1
        rec(o["sock_common"], kbtf.KIND_STRUCT, 1, 136) + struct.pack("<III", o["skc_family"], 2, 16 * 8),  # 3
        rec(o["sock"], kbtf.KIND_STRUCT, 3, 760, kflag)
        + struct.pack("<III", o["__sk_common"], 3, 0)
        + struct.pack("<III", o["sk_protocol"], proto_type, proto_off_bits)
        + struct.pack("<III", o["sk_type"], 2, 534 * 8),  # id 4
    ]
    if twice:
        types.append(types[-1])
    return kbtf.Btf(blob(types, names)[0])


def test_a_member_offset_and_size_through_a_typedef():
    b = sock_btf()
    assert b.member("sock", "sk_protocol") == kbtf.Member(532, 2)
    assert b.member("sock_common", "skc_family") == kbtf.Member(16, 2)
    assert b.member("sock", "__sk_common") == kbtf.Member(0, 0)  # a struct: no integer size
    assert b.member("sock", "nothing") is None and b.member("nothing", "sk_protocol") is None


def test_a_bitfield_an_unaligned_member_or_two_structs_of_one_name_are_unknown():
    assert sock_btf(kflag=1, proto_off_bits=(8 << 24) | 532 * 8).member("sock", "sk_protocol") is None
    assert sock_btf(proto_off_bits=532 * 8 + 3).member("sock", "sk_protocol") is None
    assert sock_btf(twice=True).member("sock", "sk_protocol") is None
    assert sock_btf(proto_type=99).member("sock", "sk_protocol") == kbtf.Member(532, 0)  # no such type id


@pytest.mark.parametrize("data", [b"", b"\x9f\xeb", b"\x00" * 24,
                                  struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1 << 20, 0, 4)])
def test_malformed_btf_is_refused(data, tmp_path):
    with pytest.raises(ValueError):
        kbtf.Btf(data)
    p = tmp_path / "btf"
    p.write_bytes(data)
    assert kbtf.member("sock", "sk_protocol", str(p)) is None
    assert kbtf.load(str(tmp_path / "missing")) is None


def test_a_cut_blob_is_refused_and_a_struct_running_past_its_section_is_not_found():
    b = sock_btf()
    with pytest.raises(ValueError):
        kbtf.Btf(b.data[:-5])  # the string section no longer fits
    # the type section made to end inside struct sock's members: its record does not fit, so no match
    short = bytearray(b.data)
    struct.pack_into("<I", short, 12, b.te - b.ts - 12)
    assert kbtf.Btf(bytes(short)).member("sock", "sk_protocol") is None


@pytest.mark.skipif(not os.path.exists(kbtf.VMLINUX), reason="no kernel BTF")
def test_the_running_kernels_sock_offsets_reach_the_probes():
    proto = kbtf.member("sock", "sk_protocol")
    fam = kbtf.member("sock_common", "skc_family")
    assert fam == kbtf.Member(16, 2)
    assert proto is not None and proto.size == 2 and proto.offset > 136  # after struct sock_common
    flags = loader.kernel_cflags()
    assert flags == ["-DHDRLOG_SKC_FAMILY=16", f"-DHDRLOG_SK_PROTOCOL={proto.offset}"]
    assert set(flags) <= set(loader.Settings().cflags())
    assert not set(flags) & set(loader.Settings(raw_tracepoints=False).cflags())
