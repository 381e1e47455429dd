"""_statsfast (C: Stats.observe, JsonlSink.write, OutputSink.write) against the Python reference: the same JSON
lines, the same statistics (result(), table(), every counter, latency reservoirs and the random generator's state)
on every recorded fixture and on generated record streams with everything a record may hold, error for error;
no references kept or leaked, the Stats collected once dropped."""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
import weakref

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from test_stats_batch import _live_records, _state

from hdrlog import output, sinks, stats
from hdrlog.output import OutputSink
from hdrlog.redact import Headers, Redactor
from hdrlog.replay import replay
from hdrlog.sinks import JsonlSink
from hdrlog.stats import Stats

CLASSES = (Stats, OutputSink, JsonlSink)
KEY = b"k" * 32
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _fast(on: bool) -> None:
    for c in CLASSES:
        c.fast = on


@pytest.fixture(autouse=True)
def _restore():
    yield
    _fast(True)


def test_the_extension_is_built_and_used():
    assert stats._statsfast is not None and all(c.fast for c in CLASSES)
    st = Stats(headers=False)
    sink = OutputSink(JsonlSink("/dev/null"), None, observers=[st])
    assert st._acc is not None and sink._chain is not None and sink.inner._w is not None
    assert Stats(headers=True)._acc is None  # header statistics: observe is add
    filtered = OutputSink(JsonlSink("/dev/null"), output.Filter(methods=["GET"]), observers=[st])
    assert filtered._chain is None
    sink.close()
    filtered.close()


# ------------------------------------------------------------------------------------- fixtures


def _run_fixture(path, fast: bool, tmp, flt=None) -> tuple:
    _fast(fast)
    out = tmp / f"{fast}.jsonl"
    st = Stats(headers=False)
    seen = []

    class Other:  # an observer in Python after the statistics
        def observe(self, rec):
            seen.append(rec["type"])

    sink = OutputSink(JsonlSink(str(out)), flt, observers=[st, None, Other()])
    replay(str(path), sink, Redactor(key=KEY), mcp_payloads=True)
    sink.close()
    res = st.result(top=10)
    return (out.read_bytes(), orjson.dumps(res), st.table(top=10), _state(st), sink.written, sink.inner.written,
            seen)


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.events.jsonl")), ids=lambda p: p.name.split(".")[0])
@pytest.mark.parametrize("flt", [None, "GET"])
def test_fixtures_write_and_count_the_same(fixture, flt, tmp_path):
    f = (lambda: output.Filter(methods=[flt])) if flt else (lambda: None)
    py = _run_fixture(fixture, False, tmp_path, f())
    c = _run_fixture(fixture, True, tmp_path, f())
    assert c == py
    assert py[4] > 0


# ------------------------------------------------------------------------------ generated streams


def _cl_headers(v):
    hs = Headers()
    if v is not _UNSET:
        hs.content_length = v
    return hs


_UNSET = object()
TEXT = st.sampled_from(["/", "/a", "/a?x=1", "/a?x=2", "/a#f?q", "/users/42", "/é/ü?z", "", "/x?", "?", "/b/c"])
ODD = st.sampled_from([5, 2.5, b"x", ("t",), True])


@st.composite
def records(draw):
    """One record as records.http_record would write it, or as damaged as Stats.add may be handed one."""
    r = draw(st.integers(0, 99))
    if r < 3:
        return {"type": "loss", "total_events": draw(st.integers(0, 10))}
    if r < 5:
        return draw(st.sampled_from([{"type": "attach"}, {}, {"type": "http"}, {"type": "http", "kind": "push"}]))
    kind = "request" if draw(st.booleans()) else "response"
    pick = lambda *xs: draw(st.sampled_from(xs))  # noqa: E731
    rec = {"type": pick("http", "http", "http", "other"), "ts": pick(
        "2026-01-01T00:00:01.000000Z", "2026-01-01T00:00:00.500000Z", "2026-01-01T00:00:09.000000Z", "", None,
        "2026-01-01T00:00:0\u00e9.0Z"), "kind": kind,
        "conn": pick({"id": "1", "peer": "10.0.0.1:5"}, {"id": "2", "peer": "[::1]:443"}, {"id": "3"}, None,
                     {"id": "4", "peer": None}, {"id": "5", "peer": "10.0.0.2:7"}),
        "proto": pick("http/1.1", "http/1.1", "h2", "http/1.0", None, "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")}
    method = pick("GET", "GET", "POST", "HEAD", "", None, "D\u00c9L")
    path = draw(st.one_of(TEXT, st.just(None)))
    if kind == "request":
        rec.update(method=method, path=path)
    else:
        rec["request"] = pick({"method": method, "path": path}, {"method": method, "path": path}, None, {},
                              {"path": path})
        rec["status"] = pick(200, 200, 204, 304, 404, 499, 500, 503, 101, None, 0, -1, 2 ** 70, 10 ** 3)
        rec["latency_ms"] = draw(st.one_of(st.floats(0, 1e6), st.just(None), st.integers(0, 2 ** 60),
                                           st.just(0.0)))
    cl = pick(None, "12", " 7 ", "\t8\t", "x", "", "  ", "0", "007", "999999999999999", "1_000", "+5", "-5",
              "\u0663", "1" * 16, "1" * 5000, "\x0b9", _UNSET)
    rec["headers"] = _cl_headers(cl) if draw(st.integers(0, 19)) else [["Content-Length", "3"]]
    rec["truncated"] = False
    if draw(st.integers(0, 29)) == 0:
        rec["mcp"] = ({"method": "tools/call", "tool": "t", "id": 1} if kind == "request"
                      else {"id": 1, "error": -32000})
    # the damaged: a field missing or of a type nobody writes (Stats.add decides: counts or raises)
    if draw(st.integers(0, 9)) == 0:
        key = pick(*[k for k in rec if k != "type"])
        if draw(st.booleans()):
            del rec[key]
        else:
            rec[key] = draw(ODD)
    return rec


def _outcome(st_obj) -> object:
    """_state, or the error reading it raises (a damaged record counted half way, by Stats.add on both paths)."""
    try:
        return _state(st_obj), st_obj.table(top=4)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__


def _feed(st_obj, recs, method: str, reads: set) -> list:
    errors = []
    for i, rec in enumerate(recs):
        try:
            getattr(st_obj, method)(rec)
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - the two paths must fail alike
            errors.append(type(exc).__name__)
        if i in reads:  # a reader in between flushes what is pending
            errors.append(_outcome(st_obj))
    return errors


@PROPS
@given(st.lists(records(), max_size=120), st.sampled_from([(20000, 2000), (3, 3), (1, 1), (5, 6)]),
       st.sets(st.integers(0, 120), max_size=3))
def test_generated_streams_count_as_add_does(recs, bounds, reads):
    saved = stats.RESERVOIR, stats.MAX_GROUPS, stats._MAX_KEYS
    try:
        stats.RESERVOIR, stats.MAX_GROUPS, stats._MAX_KEYS = bounds[0], bounds[1], max(bounds[1], 3)
        _fast(True)
        c = Stats(headers=False)
        ref = Stats(headers=False)
        c_err = _feed(c, recs, "observe", reads)
        ref_err = _feed(ref, recs, "add", reads)
        assert c_err == ref_err
        assert _outcome(c) == _outcome(ref)
        if not any(isinstance(e, str) for e in ref_err):  # error-free: the Python batch path too
            _fast(False)
            py = Stats(headers=False)
            assert _feed(py, recs, "observe", reads) == ref_err
            assert _outcome(py) == _outcome(ref)
    finally:
        stats.RESERVOIR, stats.MAX_GROUPS, stats._MAX_KEYS = saved


@pytest.mark.parametrize("seed", range(8))
def test_random_live_streams_with_full_reservoirs(monkeypatch, seed):
    """Thousands of records, reservoirs full early: every latency draws from the shared generator."""
    monkeypatch.setattr(stats, "RESERVOIR", 7)
    monkeypatch.setattr(stats, "MAX_GROUPS", 5)
    recs = _live_records(random.Random(seed), 3000)
    c, ref = Stats(headers=False), Stats(headers=False)
    _fast(False)
    py = Stats(headers=False)
    for rec in recs:
        c.observe(rec)
        ref.add(rec)
        py.observe(rec)
    assert _state(c) == _state(ref) == _state(py)


def test_huge_byte_sums_and_many_statuses_and_protocols():
    """Sums near 2**63 in the pending counters are flushed before they could overflow; more distinct statuses and
    protocols than the pending slots hold."""
    conn = {"id": "1", "peer": "10.0.0.1:1"}
    recs = []
    for i in range(6000):
        hs = Headers()
        hs.content_length = "999999999999999"
        recs.append({"type": "http", "ts": f"t{i:05d}", "kind": "response", "proto": f"p{i % 11}", "conn": conn,
                     "request": {"method": "GET", "path": "/"}, "status": 100 + i % 23, "latency_ms": float(i),
                     "headers": hs})
    c, ref = Stats(headers=False), Stats(headers=False)
    for rec in recs:
        c.observe(rec)
        ref.add(rec)
    assert _state(c) == _state(ref)
    assert c.routes[("GET", "/")].resp_bytes == 999999999999999 * sum(1 for i in range(6000) if 100 + i % 23 != 204)


# --------------------------------------------------------------------------- references and memory


def _stream(n: int) -> list:
    return _live_records(random.Random(5), n)


def test_no_references_kept_or_leaked():
    path, ts, lat = "/ref/" + "x" * 5, "2026-01-01T00:00:00." + "0" * 6 + "Z", float(1.25)
    peer = "10.9.9.9:" + "1"
    before = None
    for n in range(4):  # the first makes what stays (the path in normalise_path's cache)
        st_ = Stats(headers=False)
        conn = {"id": "1", "peer": peer}
        for i in range(500):
            hs = Headers()
            hs.content_length = "5"
            st_.observe({"type": "http", "ts": ts, "kind": "request", "proto": "h2", "conn": conn, "method": "GET",
                         "path": path, "headers": hs})
            st_.observe({"type": "http", "ts": ts, "kind": "response", "proto": "h2", "conn": conn, "status": 200,
                         "latency_ms": lat, "request": {"method": "GET", "path": path}, "headers": hs})
        assert st_.result()["requests"] == 500
        del st_, conn
        gc.collect()
        if n == 0:
            before = [sys.getrefcount(x) for x in (path, ts, lat, peer)]
    assert [sys.getrefcount(x) for x in (path, ts, lat, peer)] == before


def test_memory_stays_flat_over_many_records():
    recs = _stream(2000)
    st_ = Stats(headers=False)
    sink = OutputSink(JsonlSink("/dev/null"), None, observers=[st_])
    for rec in recs:  # warm: groups, keys, reservoirs made
        sink.write(rec)
    st_.result()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            for rec in recs:
                try:
                    sink.write(rec)
                except TypeError:
                    pass
            st_.result()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        sink.close()
    assert grown < 300_000, grown  # the reservoirs fill up to 40,000 record's floats: counted once, then replaced


def test_a_dropped_stats_is_collected():
    st_ = Stats(headers=False)
    sink = OutputSink(JsonlSink("/dev/null"), None, observers=[st_])
    for rec in _stream(50):
        sink.write(rec)
    ref = weakref.ref(st_)
    sink.close()
    del st_, sink
    gc.collect()
    assert ref() is None


# -------------------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("fast", [False, True])
def test_chain_errors_and_counts_as_python(fast, tmp_path):
    _fast(fast)
    calls = []

    class Boom:
        def observe(self, rec):
            calls.append(rec.get("n"))
            if rec.get("n") == 2:
                raise RuntimeError("observer")

    path = tmp_path / "o.jsonl"
    inner = JsonlSink(str(path))
    sink = OutputSink(inner, None, observers=[Boom()])
    sink.write({"n": 1})
    with pytest.raises(RuntimeError):
        sink.write({"n": 2})
    with pytest.raises(TypeError):
        sink.write({"n": 3, "x": object()})  # orjson cannot: nothing written, not counted
    sink.write({"n": 4})
    assert (sink.written, inner.written, calls) == (2, 2, [1, 2, 3, 4])
    sink.close()
    with pytest.raises(ValueError):
        sink.write({"n": 5})  # the file is closed
    assert path.read_bytes() == b'{"n":1}\n{"n":4}\n' and sink.written == 2


@pytest.mark.parametrize("fast", [False, True])
def test_rotating_output_through_the_chain(fast, tmp_path):
    _fast(fast)
    path = tmp_path / "r.jsonl"
    sink = OutputSink(output.base_sink("jsonl", str(path), rotate_mb=0.0001, keep=2), None, observers=[])
    for i in range(100):
        sink.write({"i": i, "pad": "x" * 20})
    sink.close()
    assert sink.written == 100 and sink.inner.written == 100 and sink.inner.f.rotations > 0
    lines = b"".join((tmp_path / n).read_bytes() for n in ("r.jsonl.2", "r.jsonl.1", "r.jsonl")).splitlines()
    assert [orjson.loads(x)["i"] for x in lines] == list(range(100 - len(lines), 100))
