"""stats.Stats's batch path: observed records counted a batch at a time, with the result Stats._add gives on each.

Stats._add costs ~1.2 µs a record in a tight loop and ~3 µs inside the pipeline (~20 dict look-ups, updates
of two groups' attributes, a method call per latency). Stats.observe keeps instead only a few fields of a
live record (ATOMS: its top-level values, whose objects the record shares with the connection or are small;
keeping the records themselves for a batch cost ~1 µs/msg more: the allocator no longer reuses their memory
while it is hot) and its Content-Length noted by the redactor. Every batch is then counted at once: columns
taken out with C iterators (map(itemgetter), Counter), the group counters updated once per distinct
(method, path, peer, status, Content-Length) with the count of records that share it (sums: their order does
not matter), and only what depends on order kept in record order: the latency reservoirs (once one is full,
the shared random generator decides each replacement) and the first look-up of a route or peer when its table
could reach MAX_GROUPS within the batch (the late ones fold into "other"): such a batch is counted record by
record through Stats._add, from records rebuilt out of the same fields (rebuild()).

With the C module built (hdrlog._statsfast), Stats.observe counts live records there instead (per record, into
pending sums flushed before any reader: ~0.2-0.4 µs a record in the pipeline, this path ~1.3-1.5); this one runs
when it is missing or switched off (Stats.fast), and stays the reference the tests compare both with.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from itertools import compress, repeat
from operator import eq, is_not, itemgetter, not_

from hdrlog.redact import Headers

# the fields observe() keeps, per kind (a KeyError sends the record to Stats.add: not a live http record)
ATOMS = {
    "request": itemgetter("kind", "type", "proto", "ts", "conn", "method", "path"),
    "response": itemgetter("kind", "type", "proto", "ts", "conn", "request", "status", "latency_ms"),
}
_get = dict.get
_K, _PROTO, _TS, _CONN, _F5, _F6, _F7 = (itemgetter(i) for i in (0, 2, 3, 4, 5, 6, 7))
_PEER, _METHOD, _PATH, _IS_REQUEST = repeat("peer"), repeat("method"), repeat("path"), repeat("request")
_FIRST, _QMARK = itemgetter(0), repeat("?")
_EMPTY: dict = {}
_NO_BODY = (204, 304)
_STATUS_TYPES = {int, type(None)}
_not_none = partial(is_not, None)


def rebuild(atoms: tuple, clen) -> dict:
    """A record with the fields of `atoms` and a header list carrying `clen`: all that Stats._add reads of it
    (observe() keeps no record with "mcp", and none when header statistics are on)."""
    hs = Headers()
    hs.content_length = clen
    if atoms[0] == "request":
        rec = dict(zip(("kind", "type", "proto", "ts", "conn", "method", "path"), atoms))
    else:
        rec = dict(zip(("kind", "type", "proto", "ts", "conn", "request", "status", "latency_ms"), atoms))
    rec["headers"] = hs
    return rec


def content_length_value(v) -> int | None:
    """A Content-Length header value as an int, None if absent or not a number (stats._content_length too)."""
    if v is None:
        return None
    try:
        return int(v.strip())
    except ValueError:
        return None


def _bare(paths) -> map:
    """Each path up to its "?" (a TypeError for a path that is not a string: such a batch goes record by record)."""
    return map(_FIRST, map(str.partition, paths, _QMARK))


def _peers(atoms) -> list:
    conns = list(map(_CONN, atoms))
    if not all(conns):
        conns = [c or _EMPTY for c in conns]
    return list(map(_get, conns, _PEER))


def aggregate(st, q: list) -> bool:
    """Count q = [atoms, content_length, atoms, content_length, ...] (Stats.observe) into st; False, having
    changed nothing, when the batch must go record by record."""
    from hdrlog.stats import MAX_GROUPS

    recs, clens = q[0::2], q[1::2]
    n = len(recs)
    kinds = list(map(_K, recs))
    nreq = kinds.count("request")
    if nreq == n:
        reqs, resps, r_clens, s_clens = recs, [], clens, []
    elif nreq == 0:
        reqs, resps, r_clens, s_clens = [], recs, [], clens
    else:
        mask = list(map(eq, kinds, _IS_REQUEST))
        other = list(map(not_, mask))
        reqs, r_clens = list(compress(recs, mask)), list(compress(clens, mask))
        resps, s_clens = list(compress(recs, other)), list(compress(clens, other))
    try:
        # requests: their own method and path; responses: those of the request they answer ("request")
        r_methods = list(map(_F5, reqs))
        if not all(r_methods):
            r_methods = [m or "?" for m in r_methods]
        asked = list(map(_F5, resps))
        if not all(asked):
            asked = [x or _EMPTY for x in asked]
        s_methods = list(map(_get, asked, _METHOD))
        if not all(s_methods):
            s_methods = [m or "?" for m in s_methods]
        statuses = list(map(_F6, resps))
        # one tuple per record, hashed once: (method, path, peer, Content-Length[, status]) -> records, the path
        # without its query (the route and the groups do not depend on it; many requests differ only there)
        req_sigs = Counter(zip(r_methods, _bare(map(_F6, reqs)), _peers(reqs), r_clens))
        resp_sigs = Counter(zip(s_methods, _bare(map(_get, asked, _PATH)), _peers(resps), s_clens, statuses))
        if not set(map(type, statuses)) <= _STATUS_TYPES:
            return False  # e.g. a string: Stats._add raises at that record
        known = st._keys
        new = {s[:3] for s in req_sigs if s[:3] not in known}
        new.update(s[:3] for s in resp_sigs if s[:3] not in known)
        for table in (st._routes, st._peers):
            if len(table) < MAX_GROUPS <= len(table) + len(new):
                return False  # which new route or peer gets a group of its own depends on the order
        lo, hi = min(map(_TS, recs)), max(map(_TS, recs))
    except (TypeError, AttributeError, ValueError):
        return False  # e.g. a "ts" that is None (Stats._add skips it), a number among strings
    if not lo:
        return False  # an empty "ts" (skipped by Stats._add)
    # ---- from here on the batch is counted (nothing above changed st)
    for kind, c in (("request", nreq), ("response", n - nreq)):
        if c:
            st._kinds[kind] += c
    st._protos.update(map(_PROTO, recs))
    if st._first_ts is None or lo < st._first_ts:
        st._first_ts = lo
    if st._last_ts is None or hi > st._last_ts:
        st._last_ts = hi
    groups = st._groups
    for (method, path, peer, raw), c in req_sigs.items():
        clen = content_length_value(raw)
        for g in groups((method, path, peer)):
            g.requests += c
            if clen is not None:
                g.req_bytes += clen * c
                g.req_bytes_known += c
    for (method, path, peer, raw, status), c in resp_sigs.items():
        clen = content_length_value(raw)
        body = clen is not None and method != "HEAD" and status not in _NO_BODY
        for g in groups((method, path, peer)):
            g.responses += c
            if status is not None:
                g.statuses[status] += c
                if 400 <= status < 500:
                    g.errors_4xx += c
                elif status >= 500:
                    g.errors_5xx += c
            if body:
                g.resp_bytes += clen * c
                g.resp_bytes_known += c
    if resps:
        _latencies(st, resps, s_methods, asked, resp_sigs)
    return True


def _latencies(st, resps: list, methods: list, asked: list, sigs: Counter) -> None:
    """Each response's latency into its two groups' reservoirs, as Group.latency does record by record."""
    from hdrlog.stats import RESERVOIR

    lats = list(map(_F7, resps))
    if None in lats:
        lats = list(filter(_not_none, lats))
        if not lats:
            return
    groups = st._groups
    by_key = {s[:3]: groups(s[:3]) for s in sigs}
    first = next(iter(by_key.values()))
    if all(gs[0] is first[0] and gs[1] is first[1] for gs in by_key.values()) and all(
            len(g.latencies) + len(lats) <= RESERVOIR for g in first):
        # every response of the batch goes to the same two groups (a route and a peer) and neither reservoir
        # fills up: no random replacement, each takes the batch's latencies in order
        vals = list(map(float, lats))
        for g in first:
            g.seen_latencies += len(vals)
            g.latencies.extend(vals)
        return
    keys = zip(methods, _bare(map(_get, asked, _PATH)), _peers(resps))
    per_record = list(map(by_key.__getitem__, keys))
    lats = list(map(_F7, resps))
    getrandbits = st.rng.getrandbits
    for gs, lat in zip(per_record, lats):
        if lat is None:
            continue
        lat = float(lat)
        for g in gs:
            n = g.seen_latencies = g.seen_latencies + 1
            lst = g.latencies
            if len(lst) < RESERVOIR:
                lst.append(lat)
            else:  # rng.randrange(n), as Group.latency draws it (Random._randbelow_with_getrandbits)
                k = n.bit_length()
                j = getrandbits(k)
                while j >= n:
                    j = getrandbits(k)
                if j < RESERVOIR:
                    lst[j] = lat
