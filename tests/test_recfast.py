"""The C fast path of records and redaction (hdrlog._recfast): records.http_record and Redactor.headers in C against
their Python code (redact.FAST = False, the reference) on every fixture replayed and on generated messages (header
names of every secret class, cookie and Authorization syntax variants, Unicode, empty and huge values, duplicates;
requests, responses, h2 messages, MCP extras with a session; --show-secrets, extra names and patterns): the records
must be equal, keys in the same order, the same types. Also SHA-256 (portable and SHA-NI) against hashlib, the HMAC
against hmac, and reference counts over many calls.

``HDRLOG_RECFAST_EXAMPLES=N`` runs N examples per property (CI: the default below).
"""

from __future__ import annotations

import gc
import glob
import hashlib
import hmac
import os
import random
import sys
import tracemalloc

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LinesSink
from hdrlog import h2, records, redact
from hdrlog.conntrack import Conn
from hdrlog.events import Event
from hdrlog.model import HttpMessage
from hdrlog.redact import Headers, Redactor
from hdrlog.replay import replay

_recfast = redact._recfast
pytestmark = pytest.mark.skipif(_recfast is None, reason="hdrlog._recfast not built")
KEY = b"k" * 32
FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "fixtures", "*.events.jsonl")))
EXAMPLES = int(os.environ.get("HDRLOG_RECFAST_EXAMPLES", "300"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def slow(monkeypatch):
    """Call with True to force the Python code, False for the C one."""
    def set_(on: bool) -> None:
        monkeypatch.setattr(redact, "FAST", not on)
    return set_


def test_the_extension_is_built_and_used():
    """CI must never run the slow path silently."""
    assert _recfast is not None
    assert records.http_record is not records.http_record_py
    assert isinstance(Redactor(key=KEY)._fast, _recfast.Redact)
    assert redact.FAST is True


def test_records_are_ordinary_dicts():
    """Records are copies of a template dict whose values are written in place (CPython 3.11's layout, checked at
    import): they must behave as dicts built key by key (tracked by the GC, growable, equal, their keys found)."""
    if sys.version_info[:2] == (3, 11):
        assert _recfast.DIRECT_VALUES == 1
    r = Redactor(key=KEY)
    m = HttpMessage(kind="request", proto="http/1.1", ts_ns=1_763_700_000_000_000_000, headers=[("A", "b")],
                    method="GET", path="/", stream=3, extra={"x": 1})
    rec = records.http_record(make_conn(None, "server", 1), "in", m, event(1), r)
    ref = records.http_record_py(make_conn(None, "server", 1), "in", m, event(1), r)
    assert gc.is_tracked(rec) and rec == ref and list(rec) == list(ref)
    for k in ref:
        assert rec[k] == ref[k] and k in rec
    rec["new"] = 1
    del rec["type"]
    rec.update((f"k{i}", i) for i in range(100))
    assert rec["k99"] == 99 and "type" not in rec and list(rec)[:2] == ["ts", "pid"]
    assert orjson.loads(orjson.dumps(rec))["method"] == "GET"


def test_show_secrets_set_later_drops_the_c_side():
    r = Redactor(key=KEY)
    r.show_secrets = True
    assert r._fast is None and r.headers([("Cookie", "a=1")]) == [["Cookie", "a=1"]]


def test_a_subclass_keeps_to_the_python_code():
    class R(Redactor):
        pass

    assert R(key=KEY)._fast is None


# ------------------------------------------------------------------------------------------ SHA-256, HMAC


@pytest.mark.parametrize("ni", [False, True])
def test_sha256_equals_hashlib_on_every_length(ni):
    if ni and not _recfast.SHA_NI:
        pytest.skip("no SHA extensions on this CPU")
    rng = random.Random(1)
    for n in [*range(301), 1000, 4095, 4096, 4097, 65536 + 7, 1 << 20]:
        data = rng.randbytes(n)
        assert _recfast.sha256(data, ni) == hashlib.sha256(data).digest(), n
    assert _recfast.sha256(b"\xff" * 55, ni) == hashlib.sha256(b"\xff" * 55).digest()  # one-block padding edge


@pytest.mark.parametrize("key_len", [0, 1, 31, 32, 63, 64, 65, 200])
def test_hmac_and_markers_equal_hmac_module(key_len):
    key = bytes(range(256))[:key_len]
    r = Redactor(key=key)
    rng = random.Random(key_len)
    for n in [*range(0, 200, 3), 1000, 5000]:
        data = rng.randbytes(n)
        assert r._fast.hmac(data) == hmac.digest(key, data, "sha256"), n
    for v in ("tok", "", "é€\U0001f511", "x" * 1000, "a\udcff", "\xe9t\xe9"):
        d = hmac.digest(key, v.encode("utf-8", "surrogatepass"), "sha256")
        assert r._fast.mark(v, False) == f"<redacted:{d[:4].hex()}>" == r._mark(v, False)
        assert r._fast.mark(v, True) == r.value(v)


# ------------------------------------------------------------------------------------------ fixtures




@pytest.mark.parametrize("fixture", FIXTURES, ids=os.path.basename)
@pytest.mark.parametrize("opts", [{}, {"show_secrets": True}, {"extra_names": ["accept", "Date"]},
                                  {"extra_patterns": ["^x-", "agent"]}, {"mcp": True}])
def test_fixtures_replay_identically(fixture, opts, slow):
    opts = dict(opts)
    mcp = opts.pop("mcp", False)
    out = []
    for py in (False, True):
        slow(py)
        sink = LinesSink()
        replay(fixture, sink, Redactor(key=KEY, **opts), mcp_payloads=mcp)
        out.append(sink.lines)
    assert out[0] == out[1]
    assert out[0]


# ------------------------------------------------------------------------------------------ generated messages

SECRET_NAMES = ["Authorization", "proxy-authorization", "X-Upstream-Authorization", "Cookie", "cookie", "Set-Cookie",
                "set-cookie2", "X-Api-Key", "x-auth-token", "X-Session-Token", "mcp-session-id", "Mcp-Session-Id",
                "my_password", " authorization "]
OTHER_NAMES = ["Content-Length", "content-length", "CONTENT-LENGTH", "Content-Lengthx", "Host", "Accept", "Date",
               "X-Auth-Token-Expires", "x-ratelimit-remaining-tokens", "User-Agent", "", "É-tag", "x-internal-id"]
BITS = ["Bearer", "Basic", "B", "x" * 20, "y" * 21, "AWS4-HMAC-SHA256", "Négo", " ", "  ", "\t", "\u00a0", "\x1c",
        "\u2028", "tok", "=", "a=b", ";", "; ", "sid=abc", "theme=dark", "=v", "k=", "Path=/", "é=ü", "\U0001f511",
        "\udcff", "\\xff", "HttpOnly", ",", "\u212a"]
name_st = st.one_of(st.sampled_from(SECRET_NAMES + OTHER_NAMES), st.text(max_size=12))
value_st = st.one_of(
    st.lists(st.sampled_from(BITS), max_size=7).map("".join),
    st.text(max_size=40),
    st.builds(lambda s, n: s * n, st.sampled_from(["a", "é", "sid=1;", "Bearer x"]), st.integers(500, 3000)),
    st.none(),  # not from a parser, but the Python code takes it (the C code declines)
)
headers_st = st.lists(st.tuples(name_st, value_st), max_size=10)
PATHS = ["/", "/api/users?id=1&fields=name", "/a?token=s3&x=1", "/a?id=1&\u212aey=v", "/p?q=passport#frag",
         "/é?sig=1", "", "*", "/a?api_key=z;b=2", "/a?%6Bey=2"]
path_st = st.one_of(st.none(), st.sampled_from(PATHS), st.text(max_size=30))


@st.composite
def message_st(draw):
    kind = draw(st.sampled_from(["request", "response", "response"]))
    proto = draw(st.sampled_from(["http/1.1", "http/1.0", "h2"]))
    m = HttpMessage(kind=kind, proto=proto, ts_ns=draw(st.integers(0, 2**62)), headers=draw(headers_st))
    m.truncated = draw(st.booleans())
    if proto == "h2":
        m.stream = draw(st.integers(1, 2**31 - 1))
    if kind == "request":
        m.method = draw(st.sampled_from(["GET", "POST", None]))
        m.path = draw(path_st)
        m.authority = draw(st.sampled_from([None, "example.com", "é.test"]))
    else:
        m.status = draw(st.sampled_from([200, 404, None]))
        m.reason = draw(st.sampled_from(["OK", "", None]))
        if draw(st.booleans()):
            m.request = HttpMessage(kind="request", proto=proto, ts_ns=0, headers=[],
                                    method=draw(st.sampled_from(["GET", None])), path=draw(path_st))
            m.latency_ms = draw(st.sampled_from([None, 0.25, 12.0]))
    if draw(st.integers(0, 3)) == 0:
        session = draw(st.sampled_from([None, "", "sess-1", "é\U0001f511"]))
        one = {"method": "tools/call", "session": session}
        m.extra = {"mcp": one if draw(st.booleans()) else [one, {"method": "x"}], "other": 1}
    return m


def make_conn(h2_dir, role, attr):
    c = Conn(id="1-1", pid=42, addr=0x1000, lib="openssl", comm="nginx")
    c.local, c.peer, c.attr = "10.0.0.1:443", "10.0.0.2:5555", attr
    if h2_dir is not None:
        c.h2 = h2.H2Conn()
        c.h2.req_dir = h2_dir
    c.pairer.role = role
    return c


def event(tid: int) -> Event:
    return Event(0, 0x1000, 42, tid, 0, 0, 0, 0, 0, 0, 0, None, None, "nginx", -1, b"")


def same(a, b) -> None:
    assert repr(a) == repr(b)  # values, key order (repr of dicts) and list subclasses' items
    assert list(a) == list(b)
    for x, y in ((a, b), (a.get("conn"), b.get("conn")), (a.get("request"), b.get("request"))):
        if isinstance(x, dict):
            assert list(x) == list(y) and x == y
    ha, hb = a["headers"], b["headers"]
    assert type(ha) is type(hb)
    if type(ha) is Headers:
        assert repr(ha.content_length) == repr(hb.content_length)


@PROPS
@given(st.lists(message_st(), min_size=1, max_size=6), st.sampled_from([None, "in", "out"]),
       st.sampled_from([None, "server", "client"]), st.integers(0, 4), st.booleans(),
       st.sampled_from([(), ("accept",), ("x-*",)]), st.sampled_from([(), ("^x-", "agent")]))
def test_generated_records_equal(msgs, h2_dir, role, attr, show, names, patterns):
    outs = []
    for py in (False, True):
        redact.FAST = not py
        try:
            r = Redactor(key=KEY, show_secrets=show, extra_names=names, extra_patterns=patterns)
            c = make_conn(h2_dir, role, attr)
            recs = []
            for i, m in enumerate(msgs):
                if i == 2:  # the tuple changes: a new "conn" object
                    c.peer = "10.0.0.3:1"
                recs.append(records.http_record(c, "in" if i % 2 else "out", m, event(7 + i), r))
                recs.append(records.http_record(c, "in", m, event(7), r))  # again: the memos hit
            outs.append((recs, c.rec_key, c.rec_conn))
        finally:
            redact.FAST = True
    for a, b in zip(outs[0][0], outs[1][0]):
        same(a, b)
    assert outs[0][1] == outs[1][1] and outs[0][2] == outs[1][2]
    first = outs[0][0]
    assert first[0]["conn"] is first[1]["conn"]  # the connection's object shared while its tuple stays


def python_headers(r: Redactor, hs):
    """r.headers(hs) through the Python code (the reference), the switch restored whatever happens."""
    redact.FAST = False
    try:
        return r.headers(hs)
    finally:
        redact.FAST = True


@PROPS
@given(headers_st, st.booleans())
def test_generated_headers_equal(hs, show):
    a = Redactor(key=KEY, show_secrets=show)
    b = Redactor(key=KEY, show_secrets=show)
    fast = a.headers(hs)
    ref = python_headers(b, hs)
    assert repr(fast) == repr(ref) and type(fast) is type(ref)
    if not show:
        assert fast.content_length == ref.content_length
    assert a.headers(hs) == fast  # memos hit
    assert list(a._markers) == list(b._markers) and all(type(k) is int for k in a._markers)


def test_secret_value_forms_equal():
    """Values built from pieces that trip each condition of the splits (scheme length and alphabet, whitespace of
    every kind, separators, items with and without "=", empty items and values, non-ASCII), many more than the
    properties above draw: every secret class, C against Python, fresh memos on both sides."""
    rng = random.Random(9)
    names = ["Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "Content-Length"]
    for _ in range(4000):
        a, b = Redactor(key=KEY), Redactor(key=KEY)
        hs = [(rng.choice(names), "".join(rng.choice(BITS) for _ in range(rng.randrange(0, 6)))) for _ in range(8)]
        fast = a.headers(hs)
        ref = python_headers(b, hs)
        assert repr(fast) == repr(ref) and fast.content_length == ref.content_length, hs


def test_paths_equal():
    """The C check that a query holds none of redact._MAYBE_SECRET_QUERY's words (then the path is kept whole) and the C
    redaction of the others against Redactor.path: parameter names made of those words, secret parameter names, any
    case, percent signs, items without "=" or with several, empty names and values, "&" and ";", fragments."""
    rng = random.Random(13)
    words = redact._MAYBE_SECRET_QUERY.pattern.split("|")
    pieces = [*words, *(w.upper() for w in words), *redact.SECRET_PARAMS, "id", "x", "_", "-", "", "\u212a", "é"]
    r = Redactor(key=KEY)
    for _ in range(15000):
        items = [f"{''.join(rng.choice(pieces) for _ in range(rng.randrange(0, 3)))}"
                 f"{rng.choice(['=', '=', '', '=='])}{rng.choice(['1', 'v', '', 'a=b', '%41'])}"
                 for _ in range(rng.randrange(0, 5))]
        path = rng.choice(["/p", "/a/b", ""]) + rng.choice(["?", "", "?x=1&"]) + rng.choice("&;") .join(items) + \
            rng.choice(["", "#f", "#token=1"])
        m = HttpMessage(kind="request", proto="http/1.1", ts_ns=1, headers=[], path=path)
        got = records.http_record(make_conn(None, "server", 1), "in", m, event(1), r)["path"]
        assert got == r.path(path), path


def test_huge_values_and_many_items():
    a, b = Redactor(key=KEY), Redactor(key=KEY)
    hs = [("Cookie", "; ".join(f"c{i}=v{i}" for i in range(20000))), ("Authorization", "Bearer " + "t" * 1_000_000),
          ("Set-Cookie", "s=" + "é" * 300_000 + "; Path=/"), ("X-Api-Key", "k" * 70_000), ("Cookie", "x" * 5000),
          ("Authorization", "\u00a0" * 10 + "Basic " + "z" * 100)]
    fast = a.headers(hs)
    ref = python_headers(b, hs)
    assert fast == ref and fast.content_length is None


def test_two_redactors_and_the_switch_interleaved():
    """Two pipelines' Redactors (other keys, other options) in one process, and the switch flipped between calls on
    one Redactor: each record equals what the Python code gives for it."""
    rs = [Redactor(key=KEY), Redactor(key=b"other" * 8, extra_names=["accept"]), Redactor(key=KEY, show_secrets=True)]
    refs = [Redactor(key=KEY), Redactor(key=b"other" * 8, extra_names=["accept"]), Redactor(key=KEY, show_secrets=True)]
    conns = [make_conn(None, "server", 1) for _ in rs]
    ref_conns = [make_conn(None, "server", 1) for _ in rs]
    rng = random.Random(4)
    for i in range(3000):
        k = rng.randrange(3)
        hs = [("Cookie", f"sid={rng.randrange(50)}; t=1"), ("Accept", "*/*"), ("Authorization", f"Bearer {i % 7}")]
        m = HttpMessage(kind="request", proto="http/1.1", ts_ns=10**18 + i, headers=hs, method="GET",
                        path=f"/a?token={rng.randrange(5)}")
        redact.FAST = rng.random() < 0.8
        try:
            got = records.http_record(conns[k], "in", m, event(1), rs[k])
        finally:
            redact.FAST = True
        same(got, records.http_record_py(ref_conns[k], "in", m, event(1), refs[k]))


def test_objects_of_other_types_and_keyword_calls():
    """Attributes of objects that are not the dataclasses (no slots: getattr), and a call with keywords (the Python
    code)."""
    from types import SimpleNamespace as NS

    r = Redactor(key=KEY)
    def conn():
        return NS(id="c", pid=1, comm="x", lib="openssl", local="a", peer="b", attr=2, pairer=NS(role="client"), h2=None,
                  rec_key=None, rec_conn=None, rec_path=None, attribution="socket")
    req = NS(kind="request", proto="http/1.1", ts_ns=10**18, headers=[("Cookie", "a=1")], method="GET", path="/?sig=2",
             authority=None, status=None, reason=None, truncated=False, stream=None, latency_ms=None, request=None,
             extra={})
    resp = NS(**{**vars(req), "kind": "response", "request": req, "status": 200, "stream": 5, "extra": {"mcp": {}}})
    ev = NS(tid=9)
    for m in (req, resp, req):
        same(records.http_record(conn(), "out", m, ev, r), records.http_record_py(conn(), "out", m, ev, r))
    c = conn()
    assert records.http_record(conn=c, direction="in", msg=req, ev=ev, redactor=r) == \
        records.http_record_py(c, "in", req, ev, r)


def test_declined_headers_use_the_python_code():
    r = Redactor(key=KEY)
    assert r._fast.headers(r, [("a", "b", "c")]) is None
    assert r._fast.headers(r, iter([("a", "b")])) is None
    assert r._fast.headers(r, [(b"Cookie", "x")]) is None
    assert r._fast.headers(r, [("Cookie", b"x")]) is None
    assert r.headers([["Cookie", b""]]) == [["Cookie", b""]]  # the Python code's answer
    assert r.headers([["Cookie", "a=1"]]) == [["Cookie", "a=" + r.value("1")]]
    odd = [("Content-Length", None), ("content-length", "5"), ("X", None), ("Content-Length", "6")]
    assert r.headers(odd).content_length == "5"  # as the Python code: the first that is not None
    with pytest.raises(ValueError):
        r.headers([("a", "b", "c")])


def test_timestamps_outside_the_c_range_go_to_python():
    r = Redactor(key=KEY)
    for ts in (0, 1, 10**9 - 1, 253402300799 * 10**9 + 999_999_999, 1_763_700_000_123_456_789):
        m = HttpMessage(kind="request", proto="http/1.1", ts_ns=ts, headers=[])
        assert records.http_record(make_conn(None, "server", 1), "in", m, event(1), r)["ts"] == \
            records.http_record_py(make_conn(None, "server", 1), "in", m, event(1), r)["ts"]
    for ts in (-1, 253402300800 * 10**9, 2**70, 1.5e18):
        m = HttpMessage(kind="request", proto="http/1.1", ts_ns=ts, headers=[])
        try:
            want = records.http_record_py(make_conn(None, "server", 1), "in", m, event(1), r)["ts"]
        except (OverflowError, ValueError, OSError) as e:
            with pytest.raises(type(e)):
                records.http_record(make_conn(None, "server", 1), "in", m, event(1), r)
        else:
            assert records.http_record(make_conn(None, "server", 1), "in", m, event(1), r)["ts"] == want


# ------------------------------------------------------------------------------------------ references


def test_no_references_leak():
    r = Redactor(key=KEY)
    c = make_conn(None, "server", 1)
    ev = event(3)
    rng = random.Random(3)
    hs = [("Authorization", "Bearer abc"), ("Cookie", "sid=1; theme=dark"), ("Set-Cookie", "s=2; HttpOnly"),
          ("Content-Length", "12"), ("X-Api-Key", "k"), ("Accept", "*/*")]
    req = HttpMessage(kind="request", proto="http/1.1", ts_ns=1_763_700_000_000_000_000, headers=hs, method="GET",
                      path="/a?token=1")
    resp = HttpMessage(kind="response", proto="http/1.1", ts_ns=1_763_700_000_100_000_000, headers=hs, status=200,
                       reason="OK", request=req, latency_ms=1.0, extra={"mcp": {"session": "s"}})
    objs = [r, c, ev, req, resp, hs, *hs, *(x for h in hs for x in h), req.path]

    def run(n, fresh):
        for i in range(n):
            if fresh:  # values never seen: the memo-miss paths (cleared when full)
                resp.headers = [("Cookie", f"a={i}; b{rng.random()}"), ("Authorization", f"Basic {i}"),
                                ("Set-Cookie", f"x={i}"), ("Set-Cookie", f"{i}"), ("X-Api-Key", str(i))]
                req.path = f"/a?id={i}&token={i}" if i % 2 else f"/b?id={i}"
            records.http_record(c, "in", req, ev, r)
            records.http_record(c, "out", resp, ev, r)

    run(2000, False)
    gc.collect()
    before = [sys.getrefcount(o) for o in objs]
    run(20000, False)
    gc.collect()
    assert [sys.getrefcount(o) for o in objs] == before
    run(9000, True)
    resp.headers, req.path = hs, "/a?token=1"
    tracemalloc.start()
    try:
        run(9000, True)  # fills and clears the memos once
        gc.collect()
        m0 = tracemalloc.get_traced_memory()[0]
        run(20000, True)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - m0
    finally:
        tracemalloc.stop()
    assert grown < 8_000_000  # bounded by the memos (8,192 entries each), not by the 40,000 records
