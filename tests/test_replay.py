"""Recorded kernel events (fixtures/, from tests/record_fixtures.py) replayed through the live pipeline.

Events in, messages out, no kernel needed: the same decode → track → parse → pair → redact → record path
as `hdrlog attach`. Loss and truncation are simulated by editing real recorded events.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

from hdrlog import events
from hdrlog.redact import Redactor
from hdrlog.replay import read_events, replay

from conftest import RecordSink

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SECRETS = ("demo-token-9f8e7d6c5b4a", "k-1234567890abcdef", "s3cr3t-session")


def run(name: str, *, show_secrets=False, path: Path | None = None):
    sink = RecordSink()
    replay(str(path or FIXTURES / name), sink, Redactor(show_secrets=show_secrets, key=b"k" * 32))
    return sink.records


def hdr(rec, name):
    return next((v for n, v in rec["headers"] if n.lower() == name.lower()), None)


def rewrite(tmp_path: Path, name: str, edit) -> Path:
    """Copy a fixture with edit(list_of_raw_events) applied."""
    meta, raws = read_events(str(FIXTURES / name))
    raws = edit(list(raws))
    out = tmp_path / name
    with out.open("wb") as f:
        f.write(orjson.dumps(meta) + b"\n")
        for r in raws:
            f.write(orjson.dumps({"raw": base64.b64encode(r).decode()}) + b"\n")
    return out


def repack(raw: bytes, **changes) -> bytes:
    names = [n for n, _ in events.EVENT_FIELDS]
    vals = list(events.EVENT_HEADER.unpack_from(raw))
    data = raw[events.EVENT_HEADER.size:]
    for k, v in changes.items():
        if k == "data":
            data = v
        else:
            vals[names.index(k)] = v
    return events.EVENT_HEADER.pack(*vals) + data


def test_python_ssl_server_fixture():
    recs = run("python_ssl_server_keepalive.events.jsonl")
    reqs = [r for r in recs if r["kind"] == "request"]
    resps = [r for r in recs if r["kind"] == "response"]
    assert sorted(hdr(r, "X-Request-Id") for r in reqs) == sorted(f"fx-{i}" for i in range(14))
    assert len(resps) == 14 and all(r["request"] for r in resps)
    for cid in {r["conn"]["id"] for r in recs}:  # FIFO pairing, per connection
        sent = [(r["method"], r["path"]) for r in reqs if r["conn"]["id"] == cid]
        answered = [(r["request"]["method"], r["request"]["path"]) for r in resps if r["conn"]["id"] == cid]
        assert sent == answered
    for resp in resps:  # and the gateway echoed the id of the request it answered
        rid = hdr(resp, "X-Request-Id")
        assert rid is None or rid in {hdr(q, "X-Request-Id") for q in reqs}
    assert {r["conn"]["role"] for r in recs} == {"server"}
    assert {r["conn"]["attribution"] for r in recs} == {"socket"}
    assert len({r["conn"]["peer"] for r in recs}) == 2 and len({r["conn"]["id"] for r in recs}) == 2
    assert {(r["method"], r["path"]) for r in reqs} >= {("GET", "/api/users?id=1&fields=name"),
                                                        ("POST", "/api/orders"), ("HEAD", "/health")}
    status = {(r["request"]["method"], r["request"]["path"]): r["status"] for r in resps}
    assert status[("HEAD", "/health")] == 200 and status[("GET", "/missing")] == 404
    assert status[("DELETE", "/api/orders/7")] == 204 and status[("POST", "/api/orders")] == 201
    assert all(r["direction"] == "in" for r in reqs) and all(r["direction"] == "out" for r in resps)
    assert not any(r["truncated"] for r in recs)
    text = json.dumps(recs)
    assert not any(s in text for s in SECRETS)
    assert "Bearer <redacted:" in text


def test_show_secrets_replay():
    text = json.dumps(run("python_ssl_server_keepalive.events.jsonl", show_secrets=True))
    assert all(s in text for s in SECRETS)


def test_node_memory_bio_fixture():
    """node: no socket inside SSL calls; tuples come from the thread's socket I/O around them."""
    recs = run("node_server_memory_bio.events.jsonl")
    reqs = [r for r in recs if r["kind"] == "request"]
    resps = [r for r in recs if r["kind"] == "response"]
    assert len(reqs) == 6 and len(resps) == 6
    assert {r["lib"] for r in recs} == {"openssl"}
    assert all(r["conn"]["peer"] and r["conn"]["local"] for r in recs)
    assert {r["conn"]["attribution"] for r in recs} <= {"recv-before", "send-after"}
    assert {hdr(r, "X-Echo") for r in resps} == {hdr(r, "X-Request-Id") for r in reqs}


def test_client_fixture():
    recs = run("python_client.events.jsonl")
    reqs = [r for r in recs if r["kind"] == "request"]
    assert len(reqs) == 5 and all(r["direction"] == "out" for r in reqs)
    assert {r["conn"]["role"] for r in recs} == {"client"}
    assert len({r["conn"]["peer"] for r in recs}) == 1


def _fns(name):
    _, raws = read_events(str(FIXTURES / name))
    evs = [events.decode_py(r, 0) for r in raws]
    return evs, {e.fn for e in evs if e.kind == events.Kind.DATA}


def test_copy_site_server_fixture():
    """Recorded under the default placement: one event per TLS record, from inside OpenSSL's record layer."""
    evs, fns = _fns("python_ssl_server_copysites.events.jsonl")
    assert fns == {events.Fn.OSSL_READ_BYTES, events.Fn.OSSL_WRITE_BYTES}
    recs = run("python_ssl_server_copysites.events.jsonl")
    reqs = [r for r in recs if r["kind"] == "request"]
    resps = [r for r in recs if r["kind"] == "response"]
    assert sorted(hdr(r, "X-Request-Id") for r in reqs) == sorted(f"cs-{i}" for i in range(8))
    assert len(resps) == 8 and all(r["request"] for r in resps)
    assert {r["conn"]["attribution"] for r in recs} == {"socket"}  # from each connection's handshake
    assert len({r["conn"]["peer"] for r in recs}) == 2
    assert not any(r["truncated"] for r in recs)
    assert not any(s in json.dumps(recs) for s in SECRETS)


def test_copy_site_client_attached_late_gets_its_peer_from_the_first_request():
    """The client's connection existed before hdrlog: its first write at the copy site has no tuple
    (Attr.LINK_NEXT), the LINK its own send emitted follows, and the consumer holds the write for it."""
    evs, _ = _fns("client_late_attach_copysites.events.jsonl")
    data = [e for e in evs if e.kind == events.Kind.DATA]
    assert data[0].attr == events.Attr.LINK_NEXT and data[0].peer is None
    assert evs[1].kind == events.Kind.LINK and evs[1].peer
    recs = run("client_late_attach_copysites.events.jsonl")
    assert [(r["direction"], r["kind"]) for r in recs] == [("out", "request"), ("in", "response")] * 3
    assert all(r["conn"]["peer"] == evs[1].peer for r in recs)
    assert recs[0]["conn"]["attribution"] == "send-after" and recs[0]["conn"]["role"] == "client"
    # SSL_peek looked at each response before SSL_read took it: reported once
    assert [r["request"]["path"] for r in recs if r["kind"] == "response"] == [
        f"/size/{5000 + i}?peek={i}" for i in range(3)]


def test_lost_event_resynchronises(tmp_path):
    """Drop the event carrying one request and flag the loss on the next event, as the kernel does."""

    def edit(raws):
        out, dropped = [], False
        for raw in raws:
            ev = events.decode(raw, 0)
            if not dropped and ev.dir == events.Dir.IN and b"X-Request-Id: fx-4\r\n" in ev.data:
                dropped = True
                continue
            if dropped and out is not None and ev.kind == events.Kind.DATA and not getattr(edit, "flagged", False):
                raw = repack(raw, lost=1)
                edit.flagged = True
            out.append(raw)
        assert dropped
        return out

    recs = run("x", path=rewrite(tmp_path, "python_ssl_server_keepalive.events.jsonl", edit))
    ids = {hdr(r, "X-Request-Id") for r in recs if r["kind"] == "request"}
    assert "fx-4" not in ids
    assert ids >= {f"fx-{i}" for i in range(14) if i != 4}


def test_truncated_capture_marks_and_recovers(tmp_path):
    """A request whose capture stops mid-header-block (as with --max-bytes) is marked truncated; the next
    request on the connection parses normally."""

    def edit(raws):
        out = []
        for raw in raws:
            ev = events.decode(raw, 0)
            if ev.dir == events.Dir.IN and b"X-Request-Id: fx-2\r\n" in ev.data:
                raw = repack(raw, cap=40, data=ev.data[:40])
            out.append(raw)
        return out

    recs = run("x", path=rewrite(tmp_path, "python_ssl_server_keepalive.events.jsonl", edit))
    trunc = [r for r in recs if r["truncated"]]
    assert len(trunc) == 1 and trunc[0]["kind"] == "request" and trunc[0]["method"] == "GET"
    ids = {hdr(r, "X-Request-Id") for r in recs if r["kind"] == "request" and not r["truncated"]}
    assert ids >= {f"fx-{i}" for i in range(3, 14)}


def test_not_a_recording(tmp_path):
    from hdrlog.errors import HdrlogError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "http"}\n')
    with pytest.raises(HdrlogError):
        read_events(str(bad))
