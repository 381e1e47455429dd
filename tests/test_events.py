"""probes/hdrlog.h and src/hdrlog/events.py must describe the same bytes: compile the header with gcc."""

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hdrlog import events

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "probes" / "hdrlog.h"

ENUMS = {"hdrlog_kind": events.Kind, "hdrlog_fn": events.Fn, "hdrlog_dir": events.Dir,
         "hdrlog_attr": events.Attr, "hdrlog_stat": events.Stat}
PREFIX = {"hdrlog_kind": "HDRLOG_EV_", "hdrlog_fn": "HDRLOG_FN_", "hdrlog_dir": "HDRLOG_DIR_",
          "hdrlog_attr": "HDRLOG_ATTR_", "hdrlog_stat": "HDRLOG_STAT_"}


def c_layout(tmp_path) -> dict[str, int]:
    """offsetof/sizeof of every field, and every enum value, as gcc sees probes/hdrlog.h."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    text = HEADER.read_text()
    fields = []
    for name, _code in events.EVENT_FIELDS:
        fields.append(f'printf("off {name} %zu %zu\\n", offsetof(struct hdrlog_event, {name}), '
                      f"sizeof(((struct hdrlog_event *)0)->{name}));")
    enum_names = re.findall(r"\b(HDRLOG_(?:EV|FN|DIR|ATTR|STAT)_[A-Z0-9_]+)\s*=", text)
    enum_prints = [f'printf("enum {n} %d\\n", (int){n});' for n in enum_names]
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\n'
        "int main(void) {\n"
        'printf("size %zu\\n", sizeof(struct hdrlog_event));\n'
        'printf("abi %d\\n", HDRLOG_ABI);\n'
        + "\n".join(fields + enum_prints) + "\nreturn 0; }\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result: dict = {}
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "off":
            result[parts[1]] = (int(parts[2]), int(parts[3]))
        else:
            result[parts[0] + ":" + parts[1] if parts[0] == "enum" else parts[0]] = int(parts[-1])
    return result


def test_event_header_layout_matches_c(tmp_path):
    c = c_layout(tmp_path)
    assert c["size"] == events.EVENT_HEADER.size
    assert c["abi"] == events.ABI
    offset = 0
    for name, code in events.EVENT_FIELDS:
        size = struct.calcsize("<" + code)
        assert c[name] == (offset, size), f"{name}: C has (offset, size) {c[name]}, Python ({offset}, {size})"
        offset += size


def test_enums_match_c(tmp_path):
    c = c_layout(tmp_path)
    for enum_name, py_enum in ENUMS.items():
        prefix = PREFIX[enum_name]
        c_members = {k.split(":", 1)[1][len(prefix):]: v for k, v in c.items()
                     if k.startswith("enum:" + prefix)}
        assert c_members, enum_name
        for member, value in c_members.items():
            assert py_enum[member].value == value, f"{enum_name}.{member}"


def test_decode_roundtrip():
    hdr = events.EVENT_HEADER.pack(
        1_000, 0xDEAD, 42, 43, 5, 5, 0, 0, events.Kind.DATA, events.Fn.SSL_READ, events.Dir.IN,
        events.Attr.IN_CALL, 2, 8443, 53422, 0, bytes([127, 0, 0, 1]) + bytes(12),
        bytes([127, 0, 0, 2]) + bytes(12), b"nginx\0".ljust(16, b"\0"), 7)
    ev = events.decode(hdr + b"hello", wall_offset_ns=10)
    assert (ev.ts_ns, ev.conn, ev.pid, ev.tid, ev.data) == (1_010, 0xDEAD, 42, 43, b"hello")
    assert (ev.local, ev.peer, ev.comm, ev.fd) == ("127.0.0.1:8443", "127.0.0.2:53422", "nginx", 7)
    assert not ev.truncated


def test_decode_v6_and_short():
    import socket

    a = socket.inet_pton(socket.AF_INET6, "::1")
    hdr = events.EVENT_HEADER.pack(0, 1, 1, 1, 10, 3, 0, 0, 1, 3, 2, 1, 10, 443, 1000, 0, a, a,
                                   b"x".ljust(16, b"\0"), -1)
    ev = events.decode(hdr + b"abc")
    assert ev.local == "[::1]:443" and ev.peer == "[::1]:1000" and ev.truncated
    with pytest.raises(ValueError):
        events.decode(hdr[:50])
