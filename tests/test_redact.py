"""Tests for hdrlog.redact.Redactor and the key file."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat

import pytest

from hdrlog import redact
from hdrlog.redact import Redactor

KEY = b"k" * 32
MARK = re.compile(r"<redacted:[0-9a-f]{8}>")


@pytest.fixture
def r():
    return Redactor(key=KEY)


def mark(value: str, key: bytes = KEY) -> str:
    return "<redacted:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:8] + ">"


# ----------------------------------------------------------------------------------------- marker


def test_marker_is_hmac_sha256_prefix(r):
    assert r.value("s3cr3t") == mark("s3cr3t")
    assert MARK.fullmatch(r.value("x"))


@pytest.mark.parametrize("key_len", [1, 31, 32, 63, 64, 65, 200])
def test_marker_is_hmac_sha256_for_any_key_length(key_len):
    """Markers come from precomputed HMAC pad states (two hash copies per value, not a key set-up each time):
    they must stay HMAC-SHA256 exactly, whatever the key's length (> 64 bytes: hashed first) and the value."""
    key = bytes(range(256))[:key_len]
    r = Redactor(key=key)
    for v in ("tok", "", "é€\U0001f511", "x" * 1000, "a\udcff"):
        d = hmac.digest(key, v.encode("utf-8", "surrogatepass"), "sha256")
        assert r.value(v) == f"<redacted:{d[:4].hex()}>"


def test_marker_is_stable_and_keyed():
    a, b = Redactor(key=KEY), Redactor(key=KEY)
    assert a.value("tok") == b.value("tok")  # equal secrets correlate, across instances
    assert a.value("tok") != a.value("tok2")
    assert Redactor(key=b"other" * 8).value("tok") != a.value("tok")


# ------------------------------------------------------------------------------------------ names

BRIEF_NAMES = [
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "apikey",
    "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token",
    "x-goog-api-key", "ocp-apim-subscription-key", "x-vault-token", "private-token",
    "x-upstream-authorization",
]  # fmt: skip


@pytest.mark.parametrize("name", BRIEF_NAMES)
def test_default_secret_names_any_case(r, name):
    assert r.is_secret_name(name)
    assert r.is_secret_name(name.upper())
    assert r.is_secret_name("-".join(w.capitalize() for w in name.split("-")))


@pytest.mark.parametrize(
    "name",
    ["X-My-Api-Key", "x-service-apikey", "X-Client-Secret", "x-service-token", "x-auth", "X-Auth-User",
     "db-password", "x_api_key", "x-forwarded-authorization", "x-ms-token-aad-id-token", "X-Credentials",
     "x-amz-access-key"],
)  # fmt: skip
def test_pattern_secret_names(r, name):
    assert r.is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens",
     "anthropic-ratelimit-input-tokens-remaining", "x-ratelimit-remaining-token", "x-token-expires",
     "x-auth-token-expires-in", "x-token-type", "sec-websocket-key", "www-authenticate",
     "proxy-authenticate", "authentication-info", "content-type", "x-request-id", "accept", "host",
     "x-tokens-used", "x-author", "oauth-scopes", "keep-alive", "x-keyboard", "x-secrets-count"],
)  # fmt: skip
def test_not_secret_names(r, name):
    assert not r.is_secret_name(name)


def test_extra_names():
    r = Redactor(key=KEY, extra_names=["X-Tenant", " x-internal-user "])
    assert r.is_secret_name("x-tenant") and r.is_secret_name("X-INTERNAL-USER")
    assert r.headers([("X-Tenant", "acme")]) == [["X-Tenant", mark("acme")]]


# ---------------------------------------------------------------------------------------- headers


def test_plain_secret_header_fully_redacted_and_order_kept(r):
    hdrs = [("Host", "a"), ("X-Api-Key", "abc123"), ("Accept", "*/*"), ("x-api-key", "abc123")]
    assert r.headers(hdrs) == [["Host", "a"], ["X-Api-Key", mark("abc123")], ["Accept", "*/*"],
                               ["x-api-key", mark("abc123")]]  # fmt: skip


def test_authorization_keeps_scheme(r):
    out = r.headers([("Authorization", "Bearer eyJhbGci.payload.sig"), ("authorization", "Basic dXNlcjpwYXNz"),
                     ("Proxy-Authorization", "Digest username=\"u\", response=\"abc\""),
                     ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=ff"),
                     ("X-Upstream-Authorization", "Bearer up")])  # fmt: skip
    assert out == [
        ["Authorization", "Bearer " + mark("eyJhbGci.payload.sig")],
        ["authorization", "Basic " + mark("dXNlcjpwYXNz")],
        ["Proxy-Authorization", "Digest " + mark('username="u", response="abc"')],
        ["Authorization", "AWS4-HMAC-SHA256 " + mark("Credential=AKIA/x, Signature=ff")],
        ["X-Upstream-Authorization", "Bearer " + mark("up")],
    ]


def test_authorization_without_scheme_is_redacted_whole(r):
    assert r.headers([("Authorization", "sk-live-0123456789")]) == [["Authorization", mark("sk-live-0123456789")]]
    assert r.headers([("Authorization", "Bearer")]) == [["Authorization", mark("Bearer")]]
    # a first word that does not look like a scheme is not kept
    assert r.headers([("Authorization", "tok3n-123 x")]) == [["Authorization", mark("tok3n-123 x")]]


def test_cookie_keeps_names(r):
    (out,) = r.headers([("Cookie", "sid=abc123; theme=dark;lang=en; flag")])
    assert out == ["Cookie", f"sid={mark('abc123')}; theme={mark('dark')};lang={mark('en')}; {mark('flag')}"]


def test_set_cookie_keeps_name_and_attributes(r):
    hdrs = [("Set-Cookie", "sid=abc123; Path=/; HttpOnly; Secure; SameSite=Lax"),
            ("Set-Cookie", "csrf=zzz; Max-Age=3600; Domain=example.com"),
            ("set-cookie", "empty=; Path=/")]  # fmt: skip
    assert r.headers(hdrs) == [
        ["Set-Cookie", f"sid={mark('abc123')}; Path=/; HttpOnly; Secure; SameSite=Lax"],
        ["Set-Cookie", f"csrf={mark('zzz')}; Max-Age=3600; Domain=example.com"],
        ["set-cookie", "empty=; Path=/"],
    ]


def test_memoised_markers_and_values_match_fresh_ones_and_hold_no_plaintext():
    """Markers and redacted header values are memoised by hash: the results are those of a fresh Redactor
    (HMAC of each value), the memo holds only ints and redacted strings, and it stays bounded."""
    r = Redactor(key=KEY)
    secrets_ = [f"tok-{i}-s3cr3t" for i in range(300)]
    for _ in range(2):  # the second pass is served from the memo
        for s in secrets_:
            assert r.value(s) == mark(s)
            assert r.headers([("Cookie", f"sid={s}; theme=dark"), ("Authorization", f"Bearer {s}"),
                              ("X-Api-Key", s), ("Accept", s)]) == [
                ["Cookie", f"sid={mark(s)}; theme={mark('dark')}"], ["Authorization", f"Bearer {mark(s)}"],
                ["X-Api-Key", mark(s)], ["Accept", s]]
    assert r.path("/p?token=tok-1-s3cr3t&x=1") == f"/p?token={mark('tok-1-s3cr3t')}&x=1"
    memos = [r._markers, *(m for m in r._values if m is not None and m is not r._markers)]
    assert len(memos) == 4  # markers; Authorization, Cookie and Set-Cookie values
    for memo in memos[:3]:
        assert memo and all(type(k) is int for k in memo)
    for memo in memos:
        assert not any("s3cr3t" in v or "dark" in v for v in memo.values())
    for i in range(redact._MEMO_MAX + 50):
        r.value(f"v{i}")
        r.headers([("X-Api-Key", f"v{i}"), ("Cookie", f"c=v{i}")])
    assert all(len(m) <= redact._MEMO_MAX for m in memos)
    assert r.value("v1") == mark("v1")  # after the memo was cleared


def test_empty_secret_value_stays_empty(r):
    assert r.headers([("X-Api-Key", "")]) == [["X-Api-Key", ""]]


def test_show_secrets_returns_values_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("HDRLOG_KEY_FILE", str(tmp_path / "nope" / "k"))
    r = Redactor(show_secrets=True)
    hdrs = [("Authorization", "Bearer x"), ("Cookie", "a=b")]
    assert r.headers(hdrs) == [["Authorization", "Bearer x"], ["Cookie", "a=b"]]
    assert r.path("/a?token=t&x=1") == "/a?token=t&x=1"
    assert not (tmp_path / "nope").exists()  # no key needed, no file written


def test_output_is_json_ready(r):
    out = r.headers([("A", "1")])
    assert isinstance(out, list) and isinstance(out[0], list)
    assert json.loads(json.dumps(out)) == [["A", "1"]]


# ------------------------------------------------------------------------------------------ paths


def test_path_query_secrets(r):
    assert r.path("/cb?token=abc&q=1") == f"/cb?token={mark('abc')}&q=1"
    assert r.path("/o?code=xyz&state=s1") == f"/o?code={mark('xyz')}&state=s1"
    assert r.path("/m?key=AIza123&center=Paris") == f"/m?key={mark('AIza123')}&center=Paris"
    p = "/b/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ffee&X-Amz-Expires=60"
    assert r.path(p) == (f"/b/o?X-Amz-Algorithm=AWS4&X-Amz-Credential={mark('AKIA%2F1')}"
                         f"&X-Amz-Signature={mark('ffee')}&X-Amz-Expires=60")  # fmt: skip
    assert r.path("/s?sig=1;api_key=2;page=3") == f"/s?sig={mark('1')};api_key={mark('2')};page=3"
    assert r.path("/s?my_access_token=t") == f"/s?my_access_token={mark('t')}"
    assert r.path("/s?access%5Ftoken=t") == f"/s?access%5Ftoken={mark('t')}"  # name matched decoded
    assert r.path("/s?Password=p&user=u") == f"/s?Password={mark('p')}&user=u"


def test_path_rest_is_byte_exact(r):
    for p in ["/", "/a/b%20c/d?", "/x?q=1&&r=%2F&s", "*", "example.com:443", "/t?token=&a=1",
              "/a?sort=desc#frag", "/p?keyword=x&monkey=y&tokens=3", "/u?secretary=1"]:  # fmt: skip
        assert r.path(p) == p
    assert r.path("/a?token=t&x=%ZZ#token=frag") == f"/a?token={mark('t')}&x=%ZZ#token=frag"
    assert r.path("/a?token=a=b") == f"/a?token={mark('a=b')}"


def test_no_secret_substring_in_output(r):
    secrets_ = ["eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "dXNlcjpodW50ZXIy", "s3ss10nIdValue",
                "AKIAIOSFODNN7EXAMPLE", "hunter2hunter2", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"]  # fmt: skip
    hdrs = [("Authorization", f"Bearer {secrets_[0]}"), ("Proxy-Authorization", f"Basic {secrets_[1]}"),
            ("Cookie", f"SID={secrets_[2]}; other={secrets_[3]}"), ("Set-Cookie", f"SID={secrets_[2]}; Path=/"),
            ("X-Vault-Token", secrets_[4]), ("Private-Token", secrets_[5]), ("X-Forwarded-Access-Token", secrets_[4])]  # fmt: skip
    path = f"/api?access_token={secrets_[0]}&password={secrets_[4]}&q=ok"
    blob = json.dumps({"headers": r.headers(hdrs), "path": r.path(path)})
    for s in secrets_:
        assert s not in blob
        assert s[:12] not in blob
    assert "q=ok" in blob and "SID=" in blob and "Bearer " in blob


# --------------------------------------------------------------------------------------- key file


@pytest.fixture
def fresh_key_state(monkeypatch):
    monkeypatch.setattr(redact, "_process_key", None)
    monkeypatch.setattr(redact, "_process_key_file", None)
    monkeypatch.setattr(redact, "EPHEMERAL_KEY", False)
    monkeypatch.setattr(redact, "KEY_PROBLEM", None)


def test_key_file_created_private_and_reused(tmp_path, monkeypatch, fresh_key_state):
    path = tmp_path / "state" / "redact.key"
    monkeypatch.setenv("HDRLOG_KEY_FILE", str(path))
    m1 = Redactor().value("secret")
    assert path.stat().st_size == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not redact.EPHEMERAL_KEY
    assert m1 == mark("secret", path.read_bytes())
    # another process (simulated by forgetting the cache) reads the same key
    monkeypatch.setattr(redact, "_process_key", None)
    assert Redactor().value("secret") == m1
    assert [p.name for p in path.parent.iterdir()] == ["redact.key"]  # no temp file left


def test_unusable_key_file_falls_back_to_process_key(tmp_path, monkeypatch, fresh_key_state):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HDRLOG_KEY_FILE", str(blocker / "redact.key"))
    r1 = Redactor()
    assert redact.EPHEMERAL_KEY and "redact.key" in redact.KEY_PROBLEM
    assert MARK.fullmatch(r1.value("x"))
    assert Redactor().value("x") == r1.value("x")  # one key per process


def test_key_file_of_wrong_size_is_not_overwritten(tmp_path, monkeypatch, fresh_key_state):
    path = tmp_path / "redact.key"
    path.write_bytes(b"short")
    monkeypatch.setenv("HDRLOG_KEY_FILE", str(path))
    Redactor().value("x")
    assert redact.EPHEMERAL_KEY and path.read_bytes() == b"short"


def test_explicit_key_does_not_touch_files(tmp_path, monkeypatch, fresh_key_state):
    monkeypatch.setenv("HDRLOG_KEY_FILE", str(tmp_path / "k" / "redact.key"))
    assert Redactor(key=KEY).value("v") == mark("v")
    assert not os.path.exists(tmp_path / "k")


def _reference_authorization(r: Redactor, v: str) -> str:
    """An Authorization value redacted the regex way (before the fast path for "<Scheme> <credentials>")."""
    parts = redact._WORD_SPLIT.split(v.lstrip(), maxsplit=1)
    if len(parts) == 3 and parts[2] and redact._SCHEME.fullmatch(parts[0]):
        lead = v[: len(v) - len(v.lstrip())]
        return f"{lead}{parts[0]}{parts[1]}{r.value(parts[2])}"
    return r.value(v)


_COOKIE_SPLIT = re.compile(r"(;\s*)")


def _reference_pair(r: Redactor, item: str) -> str:
    eq = item.find("=")
    if eq < 0:
        return r.value(item) if item.strip() else item
    val = item[eq + 1 :]
    return item[: eq + 1] + r.value(val) if val else item


def _reference_cookie(r: Redactor, v: str) -> str:
    """A Cookie value redacted the regex way (split on (;\\s*), before str.split)."""
    parts = _COOKIE_SPLIT.split(v)
    for i in range(0, len(parts), 2):
        if parts[i]:
            parts[i] = _reference_pair(r, parts[i])
    return "".join(parts)


def _reference_set_cookie(r: Redactor, v: str) -> str:
    parts = _COOKIE_SPLIT.split(v, maxsplit=1)
    parts[0] = _reference_pair(r, parts[0])
    return "".join(parts)


def _reference_path(r: Redactor, path: str) -> str:
    """Redactor.path before "&"-only queries were split with str.split (the regex way, kept here)."""
    q = path.find("?")
    if q < 0:
        return path
    h = path.find("#", q)
    query = path[q + 1 : h] if h >= 0 else path[q + 1 :]
    if not query:
        return path
    parts = redact._PARAM_SPLIT.split(query)
    for i in range(0, len(parts), 2):
        item = parts[i]
        eq = item.find("=")
        if eq >= 0 and eq + 1 < len(item) and r._secret_param(item[:eq]):
            parts[i] = item[: eq + 1] + r.value(item[eq + 1 :])
    return path[: q + 1] + "".join(parts) + (path[h:] if h >= 0 else "")


def test_fast_paths_equal_the_regex_ways():
    """Authorization values and query strings built from pieces that trip each condition of the fast paths
    (scheme length and alphabet, whitespace runs of any kind, ';' separators, empty items and values)."""
    import random

    rng = random.Random(5)
    r = Redactor(key=KEY)
    bits = ["Bearer", "Basic", "B", "x" * 20, "y" * 21, "AWS4-HMAC-SHA256", "Négo", "b3", " ", "  ", "\t", "\u00a0",
            "tok", "=", "a=b", ""]
    for _ in range(20000):
        v = "".join(rng.choice(bits) for _ in range(rng.randrange(1, 5)))
        if not v:  # an empty value stays empty (test_empty_secret_value_stays_empty)
            continue
        assert r.headers([("Authorization", v)]) == [["Authorization", _reference_authorization(r, v)]], repr(v)
    items = ["token=s3", "id=1", "x", "", "=v", "k=", "api_key=z", "a%5Fb=1", "sig=", "page=2", "TOKEN=Q",
             "\u212aey=k", "SeSSion=1", "%6Bey=2", "q=passport"]
    for _ in range(20000):
        seps = [rng.choice("&&&;") for _ in range(4)]
        query = "".join(rng.choice(items) + seps[i] for i in range(rng.randrange(0, 4))) + rng.choice(items)
        path = "/p?" + query + rng.choice(["", "#frag", "#x?token=1"])
        assert r.path(path) == _reference_path(r, path), path


def test_cookie_fast_paths_equal_the_regex_ways():
    """Cookie and Set-Cookie values split with str.split/find, without the regex (;\\s*): the same output for
    values built from separators, whitespace of any kind (what \\s and str.isspace agree on), items with and without
    "=", empty items and values."""
    import random

    rng = random.Random(7)
    r = Redactor(key=KEY)
    bits = ["sid=abc", "theme=dark", "x", "=", "=v", "k=", ";", "; ", ";  ", " ", "\t", "\u00a0", "\x1c", "\u2028",
            "\u200b", "a b", "", "Path=/", "é=ü"]
    for _ in range(30000):
        v = "".join(rng.choice(bits) for _ in range(rng.randrange(1, 7)))
        if not v:
            continue
        out = r.headers([("Cookie", v), ("Set-Cookie", v), ("set-cookie2", v)])
        assert out == [["Cookie", _reference_cookie(r, v)], ["Set-Cookie", _reference_set_cookie(r, v)],
                       ["set-cookie2", _reference_set_cookie(r, v)]], repr(v)  # fmt: skip


def test_queries_skipped_unsplit_hold_no_secret_name():
    """Redactor.path returns a query in which _MAYBE_SECRET_QUERY finds nothing without looking at its names: every
    name that is secret (SECRET_PARAMS, _SECRET_PARAM, any case, percent-encoded) has one of its words."""
    import random

    r = Redactor(key=KEY)
    for name in redact.SECRET_PARAMS:
        for n in (name, name.upper(), f"x_{name}", f"{name}-1"):
            assert redact._MAYBE_SECRET_QUERY.search(n.lower()), n
    rng = random.Random(11)
    pieces = ["api", "key", "-", "_", ".", "token", "tok", "en", "x", "sig", "nature", "pass", "word", "auth", "or",
              "jwt", "credential", "access", "secret", "Ke", "Y", "\u212a", "\u0130", "%", "6B", "code", "s", "id"]
    for _ in range(30000):
        name = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 5)))
        if r._secret_param(name):
            assert redact._MAYBE_SECRET_QUERY.search(f"a=1&{name}=v".lower()), name
    assert r.path("/a?id=1&fields=name") == "/a?id=1&fields=name"
    assert r.path("/a?id=1&\u212aey=v") == f"/a?id=1&\u212aey={mark('v')}"  # Kelvin sign: "key" once lowercased
