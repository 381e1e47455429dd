"""Redaction of secrets in header values and query strings (on by default wherever hdrlog writes).

A secret becomes ``<redacted:XXXXXXXX>``: 8 hex digits of HMAC-SHA256(key, value), so an auditor can
see that two requests carried the same credential without seeing it.  The key is the ``key``
argument, else a 32-byte random key kept in ``$HDRLOG_KEY_FILE`` or ``/var/lib/hdrlog/redact.key``
(created 0600 in a 0700 directory), so markers stay comparable across runs.  When that file cannot
be read or created (not root), a per-process random key is used and :data:`EPHEMERAL_KEY` is set.

What is kept, because auditors need it and it is not secret: the scheme of Authorization-like
headers (``Bearer <redacted:…>``), cookie names (``sid=<redacted:…>; theme=<redacted:…>``), the
name and attributes of Set-Cookie (``sid=<redacted:…>; Path=/; HttpOnly``), and everything in a path
except the values of secret-looking query parameters.

The C extension ``hdrlog._recfast`` (when built) does the work of :meth:`Redactor.headers` and
``records.http_record`` with the same memos and markers; :data:`FAST` = False forces this module's code, the
reference (tests/test_recfast.py compares the two).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from urllib.parse import unquote

try:
    from hdrlog import _recfast
except ImportError:  # not built: the Python code alone
    _recfast = None

__all__ = ["Redactor", "Headers", "DEFAULT_KEY_FILE", "EPHEMERAL_KEY", "KEY_PROBLEM", "load_key"]

#: False: Redactor.headers and records.http_record run the Python code (the reference) even when hdrlog._recfast is
#: built (read on every call)
FAST = True

DEFAULT_KEY_FILE = "/var/lib/hdrlog/redact.key"
KEY_BYTES = 32

#: True once a per-process key had to be used because the key file was unusable.
EPHEMERAL_KEY = False
#: Why the key file could not be used (one sentence), or None.
KEY_PROBLEM: str | None = None

_process_key: bytes | None = None  # key loaded (or generated) once per process and file
_process_key_file: str | None = None

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "set-cookie2",
        "x-api-key",
        "api-key",
        "apikey",
        "x-apikey",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-vault-token",
        "private-token",
        "job-token",
        "x-upstream-authorization",
        "x-forwarded-authorization",
        "x-original-authorization",
        "x-functions-key",
        "x-ms-client-secret",
        "x-client-secret",
        "x-refresh-token",
        "x-id-token",
        "x-session-token",
        "x-session-id",
        "x-jwt-assertion",
        "x-jwt",
        "cf-access-jwt-assertion",
        "cf-access-client-secret",
        "x-shopify-access-token",
        "x-hasura-admin-secret",
        "x-consul-token",
        "x-nomad-token",
        "x-sentry-auth",
        "x-stripe-client-user-agent-secret",
        "dd-api-key",
        "x-dd-api-key",
        "x-honeycomb-team",
        "x-newrelic-api-key",
        "x-figma-token",
        "x-gitlab-token",
        "x-github-token",
        "x-slack-signature",
        "x-twilio-signature",
    }
)

# Any name with one of these words as a whole "-"/"_"-separated part is secret.  Whole parts only:
# "x-ratelimit-remaining-tokens" (plural, a count), "sec-websocket-key" (a nonce) and
# "www-authenticate" stay visible.
_SECRET_NAME = re.compile(
    r"(?:^|[-_])(?:api[-_]?key|access[-_]?key|secret[-_]?key|private[-_]?key|secret|token|password|passwd"
    r"|auth|credentials?)(?:$|[-_])"
)
# Metadata about a secret rather than the secret ("x-auth-token-expires", "x-token-type").
_NOT_SECRET_NAME = re.compile(
    r"ratelimit|rate-limit|(?:[-_](?:expires?(?:-in|-at)?|expiry|expiration|ttl|type|count|length"
    r"|remaining|limit|reset|required|status|scheme|method|url|uri|endpoint))$"
)
_AUTHORIZATION_NAME = re.compile(r"(?:^|-)authorization$")

# Authorization schemes kept in clear: registered ones and plain words.
_SCHEME = re.compile(r"[A-Za-z]{2,20}|AWS4-HMAC-SHA256|GOOG4-(?:HMAC|RSA)-SHA256|SCRAM-SHA-(?:1|256)")

# Query parameter names whose value is secret (lowercased, percent-decoded).
SECRET_PARAMS = frozenset(
    {
        "token", "access_token", "refresh_token", "id_token", "auth_token", "api_key", "apikey",
        "api-key", "key", "secret", "client_secret", "password", "passwd", "pwd", "pass", "sig",
        "signature", "auth", "code", "jwt", "session", "sessionid", "session_id", "sid",
        "private_token", "x-amz-signature", "x-amz-security-token", "x-amz-credential",
        "x-goog-signature", "x-goog-credential", "awsaccesskeyid",
    }
)  # fmt: skip
_SECRET_PARAM = re.compile(
    r"(?:^|[-_.])(?:token|secret|password|passwd|signature|sig|api[-_]?key|access[-_]?key|auth"
    r"|jwt|credential)(?:$|[-_.])"
)
_PARAM_SPLIT = re.compile(r"([&;])")
# A query string in which no parameter name can be secret: every name of SECRET_PARAMS and every match of
# _SECRET_PARAM holds one of these words, and a name is looked at lowercased ("%": percent-decoded first).
# Redactor.path returns such a query as it is, without splitting it (tests/test_redact.py checks the words).
_MAYBE_SECRET_QUERY = re.compile(r"token|secret|pass|sig|key|auth|jwt|credential|code|pwd|sid|session|%")
_WORD_SPLIT = re.compile(r"(\s+)")
# "<Scheme> " followed by credentials, the usual Authorization value: what _WORD_SPLIT and _SCHEME make of it
_SCHEME_SP = re.compile(r"[A-Za-z]{2,20} (?=\S)")

_CACHE_MAX = 4096
# Redacted results remembered per Redactor (see Redactor.value and README "Secrets"): keyed by Python's hash of
# the plaintext (a per-process random SipHash key), never by the plaintext itself, so the caches hold markers
# and redacted header values only.
_MEMO_MAX = 8192


def load_key(path: str | None = None) -> bytes:
    """The redaction key from ``path`` ($HDRLOG_KEY_FILE, /var/lib/hdrlog/redact.key), created if
    missing; a per-process random key (and :data:`EPHEMERAL_KEY` = True) when that fails."""
    global _process_key, _process_key_file, EPHEMERAL_KEY, KEY_PROBLEM
    if path is None:
        path = os.environ.get("HDRLOG_KEY_FILE") or DEFAULT_KEY_FILE
    if _process_key is not None and _process_key_file == path:
        return _process_key
    try:
        key = _read_or_create(path)
        problem = None
    except OSError as e:
        key = secrets.token_bytes(KEY_BYTES)
        problem = (
            f"cannot use redaction key file {path} ({e.strerror or e}); "
            "markers are only comparable within this run"
        )
    except ValueError as e:
        key = secrets.token_bytes(KEY_BYTES)
        problem = f"{e}; markers are only comparable within this run"
    EPHEMERAL_KEY = problem is not None
    KEY_PROBLEM = problem
    _process_key, _process_key_file = key, path
    return key


def _read_or_create(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
    except FileNotFoundError:
        pass
    else:
        if len(key) != KEY_BYTES:
            raise ValueError(f"redaction key file {path} does not hold exactly {KEY_BYTES} bytes")
        return key
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    # write a temporary file then link it into place: concurrent hdrlog processes agree on one key
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    with open(path, "rb") as f:
        key = f.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise ValueError(f"redaction key file {path} does not hold exactly {KEY_BYTES} bytes")
    return key


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern, ...]:
    """``--redact-pattern`` regular expressions, searched (case-insensitively) in lowercased header names.
    Raises ValueError with one sentence for an invalid one."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"--redact-pattern {p!r} is not a valid regular expression ({exc}).") from None
    return tuple(out)


class Headers(list):
    """A record's ``[name, value]`` pairs as written (orjson writes a list subclass as a list), carrying the
    value of the first Content-Length header (or None): found in the redaction loop, which looks at every
    name anyway, so the statistics observer (stats.Stats) need not scan the headers again (~0.6 µs a record)."""

    __slots__ = ("content_length",)


# Redactor._codes: a header name's class, which says how its value is redacted (0: not at all)
_PLAIN, _WHOLE, _CL, _AUTH, _COOKIE, _SET_COOKIE = range(6)  # _CL: Content-Length, not secret (noted in Headers)


class Redactor:
    """Replaces secrets in header values and query strings by ``<redacted:XXXXXXXX>`` markers."""

    def __init__(
        self,
        *,
        show_secrets: bool = False,
        extra_names: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
        key: bytes | None = None,
    ):
        self.show_secrets = show_secrets
        self.extra_names = frozenset(n.strip().lower() for n in extra_names if n.strip())
        self.extra_patterns = compile_patterns(extra_patterns)
        if show_secrets:
            self._key = b""
        else:
            self._key = bytes(key) if key is not None else load_key()
        # HMAC-SHA256 (RFC 2104) with its two padded-key blocks hashed once: a marker then costs two copies
        # of these states, ~0.5 µs, where hmac.digest set the key up again each time (~1.4 µs)
        k = self._key if len(self._key) <= 64 else hashlib.sha256(self._key).digest()
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k.ljust(64, b"\0")))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k.ljust(64, b"\0")))
        self._names: dict[str, bool] = {}
        self._codes: dict[str, int] = {}  # header name as sent -> its class (_PLAIN ... _SET_COOKIE), for headers()
        self._params: dict[str, bool] = {}  # query parameter name as sent -> secret?
        self._markers: dict[int, str] = {}  # hash(secret) -> marker
        # hash(value) -> redacted header value, one memo per class (the redacted value depends on the class and the
        # value only). A _WHOLE value's redacted value is its marker: its memo is the markers' one.
        self._values: tuple[dict[int, str] | None, ...] = (None, self._markers, None, {}, {}, {})
        # the C side (hdrlog._recfast.Redact): the pad states hashed from the same key block, these same memos, and
        # show_secrets as it is now (dropped if show_secrets is set again: __setattr__); a subclass keeps to the
        # Python code
        self._fast = None
        if _recfast is not None and type(self) is Redactor:
            self._fast = _recfast.Redact(k.ljust(64, b"\0"), self._codes, self._values, self._markers, _MEMO_MAX,
                                         show_secrets, Headers, self._params)

    def __setattr__(self, name: str, value) -> None:
        if name == "show_secrets" and getattr(self, "_fast", None) is not None:
            self._fast = None  # the C side copied the old value: the Python code from now on
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ public API

    def value(self, secret: str) -> str:
        """The marker standing for ``secret``.

        Markers are memoised by ``hash(secret)`` (bounded, cleared when full): the HMAC costs ~1 µs and the
        same credential comes back on every request of a client. The memo holds no plaintext; two different
        secrets with the same 64-bit hash (a chance of ~2^-64 per pair with the per-process random hash key)
        would share a marker, which mis-correlates them but reveals neither."""
        m = self._markers.get(hash(secret))
        return m if m is not None else self._mark(secret)

    def _mark(self, secret: str, remember: bool = True) -> str:
        """value() when the memo missed: the HMAC, remembered unless told otherwise."""
        inner = self._inner.copy()
        inner.update(secret.encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())  # = hmac.digest(self._key, secret, "sha256")
        m = f"<redacted:{outer.digest()[:4].hex()}>"
        if not remember:
            return m
        markers = self._markers
        if len(markers) >= _MEMO_MAX:
            markers.clear()
        markers[hash(secret)] = m  # str caches its hash: computed once per value
        return m

    def is_secret_name(self, name: str) -> bool:
        """Is a header with this name (any case) secret?"""
        r = self._names.get(name)
        if r is None:
            low = name.strip().lower()
            r = (
                low in SECRET_HEADERS
                or low in self.extra_names
                or any(p.search(low) for p in self.extra_patterns)
                or _AUTHORIZATION_NAME.search(low) is not None
                or (_SECRET_NAME.search(low) is not None and _NOT_SECRET_NAME.search(low) is None)
            )
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            self._names[name] = r
        return r

    def headers(self, headers: list[tuple[str, str]]) -> list[list[str]]:
        """JSON-ready ``[name, value]`` pairs, wire order kept, secret values redacted (a :class:`Headers`)."""
        f = self._fast
        if f is not None and FAST:
            out = f.headers(self, headers)  # the same in C (None: declined, anything but str pairs in a list/tuple)
            if out is not None:
                return out
        if self.show_secrets:
            return [[n, v] for n, v in headers]
        out = Headers()
        append = out.append
        clen = None
        codes = self._codes
        values = self._values
        for n, v in headers:
            c = codes.get(n)  # the name's class memoised: one dict look-up per header, no method call
            if c is None:
                c = self._code(n)
            if not c:
                append([n, v])
                continue
            if c == _CL:
                if clen is None:
                    clen = v
            elif v:
                # the whole redacted value (cookie names, scheme, markers) memoised by hash(value), as markers are
                # (see value()): no plaintext is kept, a credential that comes back is not split again
                r = values[c].get(hash(v))
                v = r if r is not None else self._redact(c, v)
            append([n, v])
        out.content_length = clen
        return out

    def _code(self, name: str) -> int:
        """headers()'s class of a header name: how its value is redacted (_WHOLE, _AUTH, _COOKIE, _SET_COOKIE),
        _CL for the (non-secret) Content-Length, recognised as stats._content_length does (exact length, any
        case), else _PLAIN."""
        if self.is_secret_name(name):
            low = name.strip().lower()
            if low == "cookie":
                c = _COOKIE
            elif low in ("set-cookie", "set-cookie2"):
                c = _SET_COOKIE
            elif _AUTHORIZATION_NAME.search(low):
                c = _AUTH
            else:
                c = _WHOLE
        elif len(name) == 14 and name.lower() == "content-length":
            c = _CL
        else:
            c = _PLAIN
        if len(self._codes) >= _CACHE_MAX:
            self._codes.clear()
        self._codes[name] = c
        return c

    def _redact(self, c: int, v: str) -> str:
        """The redacted value of a (non-empty) header of class c when its memo missed, remembered there. The usual
        forms are redacted here, with the markers' memo inline: a method call only for a secret it has not seen."""
        if c == _WHOLE:
            return self._mark(v)
        markers = self._markers
        if c == _COOKIE:
            # "a=1; b=2": split on ";"; each item's value (after "=") redacted, an item without "=" redacted whole,
            # the whitespace after a ";" kept as sent in front of its item (what splitting on (;\s*) gave)
            parts = v.split(";")
            for i, item in enumerate(parts):
                eq = item.find("=")
                if eq >= 0:
                    if eq + 1 < len(item):
                        s = item[eq + 1 :]
                        parts[i] = item[: eq + 1] + (markers.get(hash(s)) or self._mark(s))
                elif item.strip():
                    s = item.lstrip() if i else item
                    parts[i] = item[: len(item) - len(s)] + (markers.get(hash(s)) or self._mark(s))
            r = ";".join(parts)
        # A Set-Cookie or Authorization value holds one secret, which comes back in the same value (its memo hit
        # first) and hardly ever in another: its marker is computed without the markers' memo (neither looked up
        # nor filled, which would cost a hash and two look-ups per new value)
        elif c == _SET_COOKIE:
            # only the first item is the cookie (as a Cookie item); Path/Domain/Expires/Max-Age/SameSite/... are
            # attributes, kept as sent
            semi = v.find(";")
            end = semi if semi >= 0 else len(v)
            eq = v.find("=", 0, end)
            if eq >= 0:
                r = v[: eq + 1] + self._mark(v[eq + 1 : end], False) + v[end:] if eq + 1 < end else v
            elif v[:end].strip():
                r = self._mark(v[:end], False) + v[end:]
            else:
                r = v
        else:  # _AUTH
            # "<Scheme> <credentials>", the usual form: what _authorization gives for it, without its calls
            m = _SCHEME_SP.match(v)
            if m is not None:
                sp = m.end()
                r = v[:sp] + self._mark(v[sp:], False)
            else:
                r = self._authorization(v)
        memo = self._values[c]
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[hash(v)] = r
        return r

    def path(self, path: str) -> str:
        """``path`` with the values of secret-looking query parameters redacted, the rest unchanged."""
        if self.show_secrets or not path:
            return path
        q = path.find("?")
        if q < 0 or _MAYBE_SECRET_QUERY.search(path[q + 1 :].lower()) is None:  # (a fragment's words too: a false
            return path  # positive costs only the split below)
        h = path.find("#", q)
        query = path[q + 1 : h] if h >= 0 else path[q + 1 :]
        if not query:
            return path
        if ";" in query:  # separators kept between the items
            parts, step, sep = _PARAM_SPLIT.split(query), 2, ""
        else:  # "&" only (nearly always): str.split, no regex
            parts, step, sep = query.split("&"), 1, "&"
        changed = False
        params = self._params
        for i in range(0, len(parts), step):
            item = parts[i]
            eq = item.find("=")
            if eq < 0 or eq + 1 == len(item):
                continue
            name = item[:eq]
            sec = params.get(name)  # _secret_param's memo, inline: no method call for a name seen before
            if sec or (sec is None and self._secret_param(name)):
                parts[i] = item[: eq + 1] + self.value(item[eq + 1 :])
                changed = True
        if not changed:
            return path
        rest = path[h:] if h >= 0 else ""
        return path[: q + 1] + sep.join(parts) + rest

    # ------------------------------------------------------------------ internals

    def _secret_param(self, name: str) -> bool:
        r = self._params.get(name)  # memoised per name: names repeat on every request, their values do not
        if r is None:
            low = unquote(name).strip().lower() if "%" in name else name.strip().lower()
            r = low in SECRET_PARAMS or _SECRET_PARAM.search(low) is not None
            if len(self._params) >= _CACHE_MAX:
                self._params.clear()
            self._params[name] = r
        return r

    def _authorization(self, v: str) -> str:
        """An Authorization-like value in general (_redact takes "<Scheme> <credentials>" itself): the scheme word and
        the whitespace after it kept, when the first word looks like a scheme and credentials follow."""
        parts = _WORD_SPLIT.split(v.lstrip(), maxsplit=1)
        if len(parts) == 3 and parts[2] and _SCHEME.fullmatch(parts[0]):
            lead = v[: len(v) - len(v.lstrip())]
            return f"{lead}{parts[0]}{parts[1]}{self.value(parts[2])}"
        return self.value(v)
