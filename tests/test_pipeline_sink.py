"""The pipeline writes its records to the session's inner sink itself (no guard's frame per record) and hands a
write's OSError to the session's guard, which stops the session, says why once, and discards what follows."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hdrlog import session
from hdrlog.pipeline import Pipeline
from hdrlog.redact import Redactor
from hdrlog.replay import read_events

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "python_ssl_server_keepalive.events.jsonl"


class Failing:
    def __init__(self, exc: OSError, after: int):
        self.exc, self.after, self.records = exc, after, []

    def write(self, rec) -> None:
        if len(self.records) >= self.after:
            raise self.exc
        self.records.append(rec)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def wired(inner):
    """A session's sink guard and pipeline wired as Session._start_pipeline wires them (without attaching)."""
    stop = threading.Event()
    s = session.Session.__new__(session.Session)
    s.sink = session._ReaderGone(inner, stop)
    s.pipeline = Pipeline(s.sink.inner, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=16384,
                          sink_error=s.sink.failed)
    s.sink.on_gone = s._output_gone
    return s, stop


def feed(pipe: Pipeline) -> None:
    for raw in read_events(str(FIXTURE))[1]:
        pipe.on_raw(memoryview(raw))


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"), OSError(28, "No space left on device")],
                         ids=["reader-gone", "disk-full"])
def test_a_failed_record_write_stops_once_and_discards_the_rest(exc, capsys):
    inner = Failing(exc, after=1)
    saved = os.dup(1)  # the broken-pipe path points fd 1 at /dev/null
    try:
        s, stop = wired(inner)
        feed(s.pipeline)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert len(inner.records) == 1 and stop.is_set() and s.sink.gone
    assert isinstance(s.pipeline.sink, session._Discard)
    err = capsys.readouterr().err
    assert err.count("hdrlog: ") == 1, err  # said once, although later records came
    if isinstance(exc, BrokenPipeError):
        assert "closed by its reader" in err and s.sink.error is None
    else:
        assert "No space left on device" in err and s.sink.error == "No space left on device"
    s.sink.write({"type": "summary"})  # the session's own writes are guarded as before
    assert len(inner.records) == 1


def test_without_a_sink_error_the_write_error_propagates():
    inner = Failing(OSError(5, "I/O error"), after=0)
    pipe = Pipeline(inner, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=16384)
    with pytest.raises(OSError):
        feed(pipe)


def test_records_reach_the_inner_sink_unchanged():
    inner = Failing(OSError(), after=10**9)
    s, stop = wired(inner)
    feed(s.pipeline)
    ref = Failing(OSError(), after=10**9)
    feed(Pipeline(ref, Redactor(key=b"k" * 32), lib_of_pid=lambda pid: "openssl", max_bytes=16384))
    assert inner.records == ref.records and inner.records and not stop.is_set()
