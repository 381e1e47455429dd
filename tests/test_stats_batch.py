"""Stats.observe counts live records in batches (statsbatch), or in C (_statsfast.Acc, Stats.fast); the result must
be the one Stats.add gives record by record: same counters, same latency reservoirs (and random generator state),
same folding into "other" at MAX_GROUPS, whatever the batch boundaries, and whoever reads the statistics in
between. Tests of the batch path's own workings run with Stats.fast off (test_statsfast.py has the C path's)."""

from __future__ import annotations

import json
import random

import pytest

from hdrlog import stats, statsbatch
from hdrlog.redact import Headers, Redactor
from hdrlog.stats import Stats

RED = Redactor(key=b"k" * 32)
PATHS = ["/", "/api/users", "/api/users?id=1", "/api/users/42", "/o/9f8e7d6c5b4a3f21", "/x?token=s3cret", None]
PEERS = ["10.0.0.1:5000", "10.0.0.1:5001", "10.0.0.2:443", "[::1]:8443", None]


def _live_records(rng: random.Random, n: int) -> list[dict]:
    """Records shaped as records.http_record writes them (header lists from the redactor), with the odd ones
    a capture can hold: orphan responses, no method, HEAD, 1xx/204/304/4xx/5xx, no status or latency, odd
    Content-Lengths, several protocols and peers, out-of-order timestamps, loss and MCP records between."""
    out = []
    conns = [{"id": f"1-{i}", "role": "server", "local": "10.0.0.9:443", "peer": p, "attribution": "socket"}
             for i, p in enumerate(PEERS)]
    for i in range(n):
        r = rng.random()
        if r < 0.02:
            out.append({"type": "loss", "ts": "2026-01-01T00:00:00.000000Z", "events": 1, "bytes": 9,
                        "total_events": rng.randrange(100)})
            continue
        conn = rng.choice(conns + [None] if r < 0.05 else conns)
        clen = rng.choice([None, "12", " 7 ", "x", "", "0", "100000"])
        hs = [("Host", "a"), ("Authorization", f"Bearer t{rng.randrange(3)}")]
        if clen is not None:
            hs.append((rng.choice(["Content-Length", "content-length"]), clen))
        if rng.random() < 0.1:
            hs.append(("Content-Length", "5"))  # a second one: the first counts
        base = {"type": "http", "ts": f"2026-01-01T00:00:{rng.randrange(60):02d}.{i:06d}Z", "pid": 1, "tid": 1,
                "comm": "gw", "lib": "openssl", "direction": "in", "conn": conn,
                "proto": rng.choice(["http/1.1"] * 8 + ["http/1.0", "h2"])}
        method = rng.choice(["GET", "GET", "POST", "HEAD", None])
        path = rng.choice(PATHS)
        if rng.random() < 0.5:
            rec = {**base, "kind": "request", "method": method, "path": path, "authority": "a"}
        else:
            req = None if rng.random() < 0.05 else {"method": method, "path": path}
            rec = {**base, "kind": "response", "status": rng.choice([200, 200, 101, 204, 304, 404, 503, None]),
                   "reason": "", "latency_ms": rng.choice([None, round(rng.random() * 100, 3), 0.0]),
                   "request": req}
        rec["headers"] = RED.headers(hs)
        rec["truncated"] = False
        if rng.random() < 0.03:
            rec["mcp"] = {"method": "tools/call", "tool": "t", "id": i} if rec["kind"] == "request" else {"id": i - 1}
        out.append(rec)
    return out


def _state(st: Stats) -> dict:
    """Everything a Stats has counted, including what result() only summarises (reservoirs, the generator)."""
    groups = {name: {k: (g.requests, g.responses, g.errors_4xx, g.errors_5xx, g.mcp_errors, g.seen_latencies,
                         list(g.latencies), g.req_bytes, g.req_bytes_known, g.resp_bytes, g.resp_bytes_known,
                         dict(g.statuses)) for k, g in table.items()}
              for name, table in (("routes", st.routes), ("peers", st.peers))}
    return {"result": st.result(top=10), "groups": groups, "protos": list(st.protos.items()),
            "kinds": dict(st.kinds), "rng": st.rng.getstate(), "first": st.first_ts, "last": st.last_ts,
            "lost": st.lost_events}


@pytest.fixture(params=[False, True] if Stats.fast else [False], ids=lambda f: "c" if f else "py")
def fast(request, monkeypatch):
    """Both ways of observe(): the batch path (statsbatch) and, when built, the C path (_statsfast)."""
    monkeypatch.setattr(Stats, "fast", request.param)
    return request.param


@pytest.fixture
def python_path(monkeypatch):
    monkeypatch.setattr(Stats, "fast", False)


@pytest.fixture
def small(monkeypatch):
    """Bounds small enough for a few hundred records to cross them."""
    monkeypatch.setattr(stats, "BATCH", 7)
    monkeypatch.setattr(stats, "RESERVOIR", 5)
    monkeypatch.setattr(stats, "MAX_GROUPS", 4)
    monkeypatch.setattr(stats, "_MAX_KEYS", 6)


@pytest.mark.parametrize("seed", range(12))
def test_observe_in_batches_equals_add_one_by_one(small, fast, seed):
    rng = random.Random(seed)
    recs = _live_records(rng, 400)
    one, batched = Stats(headers=False), Stats(headers=False)
    for rec in recs:
        one.add(rec)
        batched.observe(rec)
    assert _state(batched) == _state(one)


@pytest.mark.parametrize("seed", range(6))
def test_batches_of_one_route_fill_the_reservoir_as_add_does(monkeypatch, fast, seed):
    """One route and one peer (the bulk path of the reservoir): the reservoir fills within a batch, and once full
    every latency draws from the shared generator; results and the generator's state equal add()'s."""
    monkeypatch.setattr(stats, "BATCH", 16)
    monkeypatch.setattr(stats, "RESERVOIR", 40)
    rng = random.Random(seed)
    conn = {"id": "1-1", "peer": "10.0.0.1:5000"}
    recs = []
    for i in range(500):
        hs = RED.headers([("Content-Length", str(i))])
        ts = f"2026-01-01T00:00:00.{i:06d}Z"
        recs.append({"type": "http", "ts": ts, "kind": "request", "proto": "http/1.1", "conn": conn, "method": "GET",
                     "path": f"/a?i={i}", "headers": hs})
        recs.append({"type": "http", "ts": ts, "kind": "response", "proto": "http/1.1", "conn": conn, "status": 200,
                     "latency_ms": rng.choice([None, rng.random()]), "request": {"method": "GET", "path": f"/a?i={i}"},
                     "headers": hs})
    one, batched = Stats(headers=False), Stats(headers=False)
    for rec in recs:
        one.add(rec)
        batched.observe(rec)
    assert _state(batched) == _state(one)
    assert len(batched.routes[("GET", "/a")].latencies) == 40


def test_readers_see_every_observed_record(python_path):
    """result(), table() and the attributes `hdrlog attach` reads (kinds) count what is still in a batch."""
    rec = {"type": "http", "ts": "2026-01-01T00:00:00.000000Z", "kind": "request", "proto": "http/1.1",
           "conn": {"peer": "10.0.0.1:1"}, "method": "GET", "path": "/p", "headers": RED.headers([])}
    st = Stats(headers=False)
    assert not st.kinds
    st.observe(rec)
    assert st._q and st.kinds["request"] == 1 and not st._q
    st.observe(rec)
    assert st.result()["requests"] == 2
    st.observe(rec)
    assert st.short_table().startswith("3 requests")
    st.observe(rec)
    assert st.routes[("GET", "/p")].requests == 4 and st.peers["10.0.0.1"].requests == 4
    st.observe(rec)
    st.add(dict(rec, method="POST"))  # add() counts after what observe() kept
    assert st.kinds["request"] == 6 and st.routes[("POST", "/p")].requests == 1


def test_observe_keeps_no_record_and_a_bounded_batch(python_path):
    """Keeping the records themselves for a batch made the pipeline ~1 µs/msg slower (their memory is not reused
    while hot): only the fields in statsbatch.ATOMS are kept (no header list), at most BATCH records' worth."""
    st = Stats(headers=False)
    rec = {"type": "http", "ts": "t", "kind": "request", "proto": "h2", "conn": {"peer": "p:1"}, "method": "GET",
           "path": "/", "headers": RED.headers([("Content-Length", "3"), ("X", "y")])}
    for _ in range(stats.BATCH - 1):
        st.observe(rec)
    assert len(st._q) == 2 * (stats.BATCH - 1)
    assert all(type(x) in (tuple, str) for x in st._q) and rec["headers"] not in st._q
    st.observe(rec)
    assert st._q == [] and st.kinds["request"] == stats.BATCH


def test_records_from_a_file_are_counted_at_once_and_equal_live_ones(fast):
    """Records read back from JSON have plain header lists (no noted Content-Length): observe() counts them at
    once (the Content-Length is scanned), with the same result as the live records batched."""
    recs = [r for r in _live_records(random.Random(99), 300) if r.get("conn") is not None]
    live, read_back = Stats(headers=False), Stats(headers=False)
    for rec in recs:
        live.observe(rec)
        back = json.loads(json.dumps(rec))
        read_back.observe(back)
        assert not read_back._q and (read_back._acc is None or not read_back._acc.pending)
    assert live.result() == read_back.result()


def test_a_batch_that_could_reach_max_groups_goes_record_by_record(monkeypatch, python_path):
    """Which new route gets a group of its own and which folds into "other" depends on arrival order."""
    monkeypatch.setattr(stats, "MAX_GROUPS", 3)
    calls = []
    real = statsbatch.aggregate
    monkeypatch.setattr(statsbatch, "aggregate", lambda st, q: calls.append(real(st, q)) or calls[-1])
    conn = {"peer": "10.0.0.1:1"}
    st, one = Stats(headers=False), Stats(headers=False)
    for i in range(6):
        rec = {"type": "http", "ts": "t", "kind": "request", "proto": "http/1.1", "conn": conn, "method": "GET",
               "path": f"/r{5 - i}x", "headers": RED.headers([])}
        st.observe(rec)
        one.add(rec)
    assert st.result() == one.result() and calls == [False]
    assert sorted(st.routes) == sorted(one.routes) == [("GET", "/r3x"), ("GET", "/r4x"), ("GET", "/r5x"),
                                                       ("other", "other")]


def test_rebuilt_records_are_what_add_reads():
    hs = Headers()
    hs.content_length = " 9 "
    rec = statsbatch.rebuild(("response", "http", "h2", "t", {"peer": "p:1"}, {"method": "GET", "path": "/"}, 200,
                              1.5), " 9 ")
    assert rec["request"] == {"method": "GET", "path": "/"} and rec["latency_ms"] == 1.5
    assert stats._content_length(rec) == 9 and rec["headers"] == hs
