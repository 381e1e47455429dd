"""Replay raw events recorded with `hdrlog attach --record-events` through the live pipeline."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import orjson

from hdrlog import events
from hdrlog.errors import HdrlogError


def _meta(f, path: str) -> dict:
    """The header line of a recording, or HdrlogError saying what is wrong with it."""
    try:
        meta = orjson.loads(f.readline())
    except orjson.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("type") != "hdrlog-events":
        raise HdrlogError(f"{path} is not an hdrlog event recording (made with attach --record-events).")
    if meta.get("abi") != events.ABI:
        raise HdrlogError(f"{path} was recorded with event layout {meta.get('abi')}, this hdrlog reads {events.ABI}.")
    return meta


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise HdrlogError(f"cannot read {path}: {exc.strerror or exc}.") from None


def check_recording(path: str) -> None:
    """Read a whole recording once, before any output: one sentence for an unreadable file, a wrong header
    or a damaged line (with its number)."""
    import binascii

    with _open(path) as f:
        _meta(f, path)
        try:
            for n, line in enumerate(f, 2):
                if line.strip():
                    try:
                        base64.b64decode(orjson.loads(line)["raw"], validate=True)
                    except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError):
                        raise HdrlogError(f"{path} line {n} is not a recorded event (the recording is damaged).") \
                            from None
        except OSError as exc:
            raise HdrlogError(f"cannot read {path}: {exc.strerror or exc}.") from None


def read_events(path: str) -> tuple[dict, Iterator[bytes]]:
    """(meta, raw events) of a recording; raises HdrlogError if it is not one."""
    f = _open(path)
    try:
        meta = _meta(f, path)
    except BaseException:
        f.close()
        raise

    def gen() -> Iterator[bytes]:
        with f:
            for line in f:
                if line.strip():
                    yield base64.b64decode(orjson.loads(line)["raw"])

    return meta, gen()


def replay(path: str, sink, redactor, *, max_bytes: int | None = None, tap=None,
           mcp_payloads: bool = False) -> "Pipeline":  # noqa: F821
    from hdrlog.pipeline import Pipeline

    meta, raws = read_events(path)
    libs = {int(k): v for k, v in meta.get("libs", {}).items()}
    pipe = Pipeline(
        sink, redactor, lib_of_pid=lambda pid: libs.get(pid, "openssl"),
        max_bytes=max_bytes or meta.get("max_bytes", 16384), wall_offset_ns=meta.get("wall_offset_ns", 0),
        tap=tap, mcp_payloads=mcp_payloads,
    )
    for raw in raws:
        pipe.on_raw(raw)
    pipe.tracker.release_parked()
    return pipe
