"""src/hdrlog/records.schema.json is the output contract: every record hdrlog writes must validate, and
the schema must be strict enough to reject broken records.

Records come from a real capture (demo gateway + client under `hdrlog attach`, with a tiny ring buffer
next to it so loss records exist too, and the target killed so exit records do), from `hdrlog demo
--jsonl`, and from `hdrlog replay` of the recorded fixtures.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from conftest import ROOT, run_client, start_gateway  # noqa: E402

SCHEMA_PATH = ROOT / "src" / "hdrlog" / "records.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
TYPES = set(SCHEMA["properties"]["type"]["enum"])
FIXTURES = sorted((ROOT / "fixtures").glob("*.events.jsonl"))


def errors(rec: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(rec)]


def assert_valid(records: list[dict], where: str) -> None:
    assert records, f"no records from {where}"
    bad = [(r.get("type"), errors(r), r) for r in records if errors(r)]
    assert not bad, f"{len(bad)} invalid records from {where}, first: {bad[0]}"


def declared(type_: str) -> set[str]:
    """Fields the schema names for a record type (top level + its $defs entry)."""
    d = SCHEMA["$defs"][type_]
    return set(SCHEMA["properties"]) | set(d.get("properties", {})) | set(d.get("required", []))


def assert_declared(records: list[dict], where: str) -> None:
    """No field the schema does not name (it documents the output, so an undocumented field is a gap)."""
    extra = {(r["type"], k) for r in records for k in set(r) - declared(r["type"])}
    assert not extra, f"fields in records from {where} that the schema does not describe: {sorted(extra)}"


def parse_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def replay(path: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "hdrlog", "replay", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return parse_lines(r.stdout)


# ------------------------------------------------------------------------------ the schema itself
def test_schema_is_a_valid_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert TYPES == {"http", "attach", "loss", "exit", "summary"}
    assert set(SCHEMA["$defs"]) >= TYPES


# ------------------------------------------------------------------------------ records, no kernel
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_replayed_fixture_records_validate(fixture):
    records = replay(fixture)
    assert_valid(records, fixture.name)
    assert_declared(records, fixture.name)


@pytest.fixture(scope="module")
def sample_http() -> dict:
    if not FIXTURES:
        pytest.skip("no recorded fixtures")
    recs = [r for r in replay(FIXTURES[0]) if r["type"] == "http"]
    req = next(r for r in recs if r["kind"] == "request")
    resp = next(r for r in recs if r["kind"] == "response")
    assert not errors(req) and not errors(resp)
    return {"request": req, "response": resp}


# --------------------------------------------------------------------- negative: the schema bites
def _without(rec: dict, *path: str) -> dict:
    rec = copy.deepcopy(rec)
    d = rec
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]
    return rec


def _with(rec: dict, value, *path: str) -> dict:
    rec = copy.deepcopy(rec)
    d = rec
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return rec


def test_http_record_without_conn_is_invalid(sample_http):
    assert any("'conn' is a required property" in e for e in errors(_without(sample_http["request"], "conn")))


@pytest.mark.parametrize("mutate", [
    lambda r: _without(r, "conn", "peer"),
    lambda r: _with(r, {**r["conn"], "extra": 1}, "conn"),
    lambda r: _with(r, "127.0.0.1", "conn", "local"),  # no port
    lambda r: _with(r, "sideways", "direction"),
    lambda r: _with(r, "maybe", "truncated"),
    lambda r: _with(r, [["Host"]], "headers"),
    lambda r: _with(r, "2026-11-22 01:00:00", "ts"),
    lambda r: _with(r, 0, "pid"),
    lambda r: _without(r, "method"),
    lambda r: _with(r, "spdy", "proto"),
], ids=["no-peer", "conn-extra-field", "addr-without-port", "bad-direction", "truncated-not-bool",
        "header-not-a-pair", "ts-not-rfc3339", "pid-0", "request-without-method", "bad-proto"])
def test_broken_request_records_are_invalid(sample_http, mutate):
    assert errors(mutate(sample_http["request"]))


@pytest.mark.parametrize("mutate", [
    lambda r: _without(r, "status"),
    lambda r: _without(r, "latency_ms"),
    lambda r: _with(r, -1.0, "latency_ms"),
    lambda r: _with(r, "200", "status"),
], ids=["no-status", "no-latency", "negative-latency", "status-as-string"])
def test_broken_response_records_are_invalid(sample_http, mutate):
    assert errors(mutate(sample_http["response"]))


@pytest.mark.parametrize("rec", [
    {"type": "nonsense", "ts": "2026-11-22T01:00:00.000000Z"},
    {"type": "summary"},
    {"type": "summary", "ts": "2026-11-22T01:00:00.000000Z", "messages": 1},
    {"type": "loss", "ts": "2026-11-22T01:00:00.000000Z", "events": 0, "bytes": 0, "total_events": 0},
    {"type": "attach", "ts": "2026-11-22T01:00:00.000000Z", "comm": "x", "lib": "openssl", "kind": "openssl",
     "path": "/x", "symbols": []},
    {"type": "exit", "ts": "2026-11-22T01:00:00.000000Z"},
], ids=["unknown-type", "no-ts", "summary-incomplete", "loss-of-nothing", "attach-without-pid", "exit-without-pid"])
def test_broken_other_records_are_invalid(rec):
    assert errors(rec)


# ------------------------------------------------------------------------------ real captures
@pytest.mark.kernel
def test_every_record_of_a_real_capture_validates(procs, certs, tmp_path):
    cert, key = certs
    gw, port = start_gateway(procs, certs)

    def attach(name, *extra):
        out, err = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.err"
        p = procs([sys.executable, "-m", "hdrlog", "attach", "--pid", str(gw.pid), "--output", str(out), *extra],
                  stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        return p, out, err

    def ready(p, out, err):
        deadline = time.monotonic() + 60
        while "attached" not in err.read_text():
            assert p.p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)

    normal = attach("normal")
    tiny = attach("tiny", "--ringbuf-pages", "1", "--show-secrets")  # both compile at once
    ready(*normal)
    ready(*tiny)
    run_client(port, "schema", requests=14, connections=2)
    import http.client
    import ssl

    ctx = ssl._create_unverified_context()
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.request("GET", "/fat", headers={"X-Fat": "f" * 8192})  # cannot fit a 4 KiB ring buffer: a loss record
    c.getresponse().read()
    c.close()
    time.sleep(0.8)
    gw.p.kill()  # exit records, then both sessions end by themselves with a summary
    gw.p.wait()
    seen: set[str] = set()
    for p, out, err in (normal, tiny):
        assert p.p.wait(15) == 0, err.read_text()
        records = parse_lines(out.read_text())
        assert_valid(records, out.name)
        assert_declared(records, out.name)
        seen |= {r["type"] for r in records}
    assert seen == TYPES, seen
    normal_recs = parse_lines(normal[1].read_text())
    assert len([r for r in normal_recs if r["type"] == "http" and r["kind"] == "request"]) == 15


@pytest.mark.kernel
def test_demo_jsonl_records_validate():
    r = subprocess.run([sys.executable, "-m", "hdrlog", "demo", "--jsonl", "--requests", "7"], capture_output=True,
                       text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    records = parse_lines(r.stdout)
    assert_valid(records, "hdrlog demo --jsonl")
    assert_declared(records, "hdrlog demo --jsonl")
    types = {x["type"] for x in records}
    assert {"attach", "http", "summary"} <= types, types
    assert len([x for x in records if x["type"] == "http"]) == 14
