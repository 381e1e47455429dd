"""The redaction policy end to end (issue 7, "Secrets and privilege"): --redact / --redact-pattern, and no
default-redacted value in any output — JSON lines, the pretty view, stderr, `hdrlog stats` (table and
--json), Prometheus metrics labels, pcap refusal and error messages —, including when a header block is
cut right after its Authorization header."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from hdrlog import events
from hdrlog.errors import HdrlogError
from hdrlog.metrics import MetricsServer
from hdrlog.redact import Redactor, compile_patterns
from hdrlog.replay import read_events

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE = FIXTURES / "python_ssl_server_keepalive.events.jsonl"
# what the recorded demo client sent (Authorization, X-Api-Key, Cookie, Set-Cookie) and what we add below
SECRETS = ("demo-token-9f8e7d6c5b4a", "k-1234567890abcdef", "s3cr3t-session", "qs-secret-4242", "qs-key-5151",
           "cut-bearer-7373")
H = events.EVENT_HEADER


def hdrlog(*args, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hdrlog", *map(str, args)], capture_output=True, text=True,
                          timeout=60, input=stdin)


def repack(raw: bytes, data: bytes) -> bytes:
    names = [n for n, _ in events.EVENT_FIELDS]
    vals = list(H.unpack_from(raw))
    vals[names.index("len")] = vals[names.index("cap")] = len(data)
    vals[names.index("offset")] = 0
    return H.pack(*vals) + data


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """The recorded demo traffic, plus a request with query-string secrets and a request whose header block
    is cut (the connection closes) right after a complete Authorization header."""
    meta, raws = read_events(str(FIXTURE))
    raws = list(raws)
    first = next(r for r in raws if r[H.size:].startswith(b"GET /api/users"))
    data = first[H.size:]
    q = data.replace(b"/api/users?id=1&fields=name", b"/api/users?id=1&token=qs-secret-4242&api_key=qs-key-5151", 1)
    i = raws.index(first)
    raws[i] = repack(first, q)
    # a new connection (another SSL* address) whose only request stops right after Authorization
    cut = repack(first, b"GET /cut HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer cut-bearer-7373\r\nX-Par")
    vals = list(H.unpack_from(cut))
    vals[1] ^= 0x5A5A0000  # conn
    cut = H.pack(*vals) + cut[H.size:]
    names = [n for n, _ in events.EVENT_FIELDS]
    for k, v in (("kind", events.Kind.CLOSE), ("fn", events.Fn.SSL_FREE), ("dir", 0), ("len", 0), ("cap", 0)):
        vals[names.index(k)] = int(v)
    close = H.pack(*vals)  # SSL_free: the block in progress is reported truncated
    raws += [cut, close]
    out = tmp_path_factory.mktemp("rec") / "rec.events.jsonl"
    with out.open("wb") as f:
        f.write(orjson.dumps(meta) + b"\n")
        for r in raws:
            f.write(orjson.dumps({"raw": base64.b64encode(r).decode()}) + b"\n")
    return out


def assert_clean(text: str, where: str):
    for s in SECRETS:
        assert s not in text, f"{s} in {where}"


def test_recording_carries_the_secrets(recording):
    r = hdrlog("replay", recording, "--show-secrets")
    assert r.returncode == 0, r.stderr
    for s in SECRETS[:5]:
        assert s in r.stdout
    assert "/cut" in r.stdout and "cut-bearer-7373" in r.stdout  # the cut block is reported (truncated)


def test_no_secret_in_jsonl_pretty_stderr_and_stats(recording, tmp_path):
    r = hdrlog("replay", recording)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout, "jsonl")
    assert_clean(r.stderr, "stderr")
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    cut = [x for x in recs if x.get("path") == "/cut"]
    assert len(cut) == 1 and cut[0]["truncated"] is True
    assert "<redacted:" in r.stdout and "token=<redacted:" in r.stdout and "api_key=<redacted:" in r.stdout
    p = hdrlog("replay", recording, "--format", "pretty")
    assert p.returncode == 0, p.stderr
    assert "GET /api/users" in p.stdout
    assert_clean(p.stdout + p.stderr, "pretty view")
    f = tmp_path / "out.jsonl"
    f.write_text(r.stdout)
    for extra in ((), ("--json",), ("--top", "50")):
        s = hdrlog("stats", f, *extra)
        assert s.returncode == 0, s.stderr
        assert_clean(s.stdout + s.stderr, f"stats {extra}")
    s = hdrlog("stats", "-", "--json", stdin=r.stdout)
    assert s.returncode == 0 and "Authorization" in s.stdout or "authorization" in s.stdout.lower()
    assert_clean(s.stdout, "stats -")


def test_no_secret_in_metrics_labels(recording):
    from prometheus_client import generate_latest

    r = hdrlog("replay", recording)
    m = MetricsServer("127.0.0.1", 0)
    for line in r.stdout.splitlines():
        m.observe(orjson.loads(line))
    text = generate_latest(m.registry).decode()
    assert "hdrlog_http_requests_total" in text and "/api/users" in text
    assert_clean(text, "metrics")
    assert "redacted" not in text  # routes drop the query: not even the markers become label values


def test_pcap_needs_show_secrets_and_says_so(recording, tmp_path):
    r = hdrlog("replay", recording, "--pcap", tmp_path / "x.pcapng")
    assert r.returncode == 2 and "--show-secrets" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.pcapng").exists()
    assert_clean(r.stdout + r.stderr, "pcap refusal")


def test_errors_never_quote_plaintext(recording, tmp_path):
    bad = tmp_path / "bad.events.jsonl"
    lines = recording.read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:5]) + b'{"raw": "demo-token-9f8e7d6c5b4a"}\n' + b"".join(lines[5:]))
    r = hdrlog("replay", bad)
    assert "Traceback" not in r.stderr
    assert "demo-token" not in r.stderr


# ------------------------------------------------------------------------------ --redact, --redact-pattern
def test_redactor_extra_names_and_patterns():
    red = Redactor(key=b"k" * 32, extra_names=["X-Request-Id"], extra_patterns=[r"^x-internal-", "TENANT"])
    got = dict(red.headers([("X-Request-Id", "r1"), ("X-Internal-Route", "blue"), ("X-My-Tenant-Hint", "acme"),
                            ("Accept", "*/*"), ("x-internalx", "keep")]))
    assert got["X-Request-Id"].startswith("<redacted:") and got["X-Internal-Route"].startswith("<redacted:")
    assert got["X-My-Tenant-Hint"].startswith("<redacted:")
    assert got["Accept"] == "*/*" and got["x-internalx"] == "keep"
    assert Redactor(key=b"k" * 32, show_secrets=True, extra_names=["accept"]).headers([("Accept", "a")]) == \
        [["Accept", "a"]]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_patterns(["("])


def test_replay_redact_flags(recording):
    r = hdrlog("replay", recording, "--redact", "x-request-id", "--redact", "USER-AGENT",
               "--redact-pattern", "^accept")
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    heads = [(n.lower(), v) for x in recs if x["type"] == "http" for n, v in x["headers"]]
    for name in ("x-request-id", "user-agent", "accept", "accept-encoding"):
        vals = [v for n, v in heads if n == name]
        assert vals and all(v.startswith("<redacted:") for v in vals), (name, vals)
    assert any(n == "host" and not v.startswith("<redacted") for n, v in heads)
    assert_clean(r.stdout, "jsonl with --redact")


def test_bad_redact_pattern_is_one_sentence(recording):
    r = hdrlog("replay", recording, "--redact-pattern", "a(b")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--redact-pattern 'a(b' is not a valid regular expression" in r.stderr


def test_attach_accepts_redact_flags_and_refuses_a_bad_pattern_before_attaching():
    r = hdrlog("attach", "--pid", "1", "--redact-pattern", "[", "--duration", "1")
    assert r.returncode == 2 and "not a valid regular expression" in r.stderr and "Traceback" not in r.stderr
    h = hdrlog("attach", "--help")
    assert "--redact NAME" in h.stdout and "--redact-pattern REGEX" in h.stdout


@pytest.mark.kernel
def test_kernel_attach_redact_flags_and_default_secrets(procs, certs, tmp_path):
    """A live capture with --redact/--redact-pattern: the extra headers are redacted, the defaults too, in
    the JSON lines, stderr (the end-of-attach table) and the metrics scraped while attached."""
    import urllib.request

    from conftest import TOKEN_SECRET, free_port, run_client
    from test_kernel_lifecycle import Run, gateway

    gw, port = gateway(procs, certs)
    mport = free_port()
    h = Run(procs, tmp_path, [gw.pid], extra=("--redact", "X-Request-Id", "--redact-pattern", "^user-ag",
                                              "--metrics", f"127.0.0.1:{mport}"))
    run_client(port, "red", requests=7, connections=1)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    assert h.signal(signal.SIGINT) == 0, h.stderr()
    out, err = h.out.read_text(), h.stderr()
    for s in (TOKEN_SECRET, "k-1234567890abcdef", "s3cr3t-session", "red-0", "hdrlog-demo-client"):
        assert s not in out and s not in err and s not in metrics, s
    recs = [orjson.loads(x) for x in out.splitlines()]
    heads = [(n.lower(), v) for r in recs if r["type"] == "http" for n, v in r["headers"]]
    assert [v for n, v in heads if n == "x-request-id"]
    assert all(v.startswith("<redacted:") for n, v in heads if n in ("x-request-id", "user-agent"))
    assert all(v.startswith("Bearer <redacted:") for n, v in heads if n == "authorization")
    assert "hdrlog_http_requests_total" in metrics
