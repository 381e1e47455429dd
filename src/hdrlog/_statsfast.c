/* hdrlog._statsfast: C fast path of the output chain (hdrlog.output, hdrlog.sinks) and of the end-of-run
 * statistics observer (hdrlog.stats).
 *
 * Acc(stats, Headers, reservoir, content_length_value): Stats.observe for a live record (stats.Stats keeps it as
 *   its `observe` when header statistics are off). A record is counted here, in record order, into pending sums
 *   per group (the route's and the peer's stats.Group, found once per distinct (method, path up to "?", peer) by
 *   calling Stats._find_groups, so groups are created and folded into "other" in record order, as Stats._add does);
 *   the order-dependent part, the latency reservoirs and the shared random generator, is updated at once in the
 *   Groups' own lists with rng.getrandbits drawn exactly as random.Random.randrange draws them. flush() adds the
 *   pending sums to the Python objects (Group attributes, statuses, kinds, protocols, first/last timestamps):
 *   Stats calls it before anything reads them and before it counts a record itself. A record this code does not
 *   take (not a live http record, MCP items, a type it does not expect) goes to stats.add(rec): Python counts it
 *   after the pending sums are flushed, with the same result.
 * JsonlWriter(write, dumps, option): sinks.JsonlSink.write: write(dumps(rec, option=option)), counted.
 * Chain(observe_callables, inner_write): output.OutputSink.write without a filter: each observer, then the inner
 *   sink, counted; an Acc's observe and a JsonlWriter's write are called in C, anything else through Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* ------------------------------------------------------------------ interned names (immutable constants) */
static PyObject *s_kind, *s_type, *s_proto, *s_ts, *s_conn, *s_method, *s_path, *s_request, *s_response,
    *s_status, *s_latency, *s_headers, *s_mcp, *s_http, *s_peer, *s_qmark, *s_HEAD, *s_option, *s_kwnames,
    *s_groups, *s_add, *s_rng, *s_getrandbits, *s_seen, *s_latencies, *s_statuses, *s_kinds_attr,
    *s_protos_attr, *s_first, *s_last, *s_content_length;
/* Group attributes, in the order of GStat.d */
static const char *const d_names[8] = {"requests", "responses", "errors_4xx", "errors_5xx", "req_bytes",
                                        "req_bytes_known", "resp_bytes", "resp_bytes_known"};
static PyObject *s_d[8];
enum { D_REQ, D_RESP, D_4XX, D_5XX, D_RQB, D_RQK, D_RSB, D_RSK };

#define NST 8      /* distinct statuses pending per group before a flush */
#define NPROTO 8   /* distinct protocols pending before a flush */
#define MAX_KEYS 65536
#define MAX_CLEN 1000000000000000LL  /* larger Content-Lengths go to Python (sums stay far from overflow) */

typedef struct {
    PyObject *group; /* stats.Group (strong) */
    PyObject *lat;   /* its latencies list as of generation gen (strong, or NULL) */
    long long gen;
    long long seen, seen0; /* seen_latencies now, and as read at gen */
    long long d[8];
    int nst;
    long st[NST];
    long long stn[NST];
    int dirty;
} GStat;

typedef struct {
    PyObject_HEAD
    PyObject *stats;      /* the Stats (strong: a cycle through its `observe`, hence GC) */
    PyTypeObject *hdrs;   /* redact.Headers */
    Py_ssize_t cl_off;    /* offset of its content_length slot */
    PyObject *clv;        /* statsbatch.content_length_value */
    Py_ssize_t reservoir;
    PyObject *keymap;     /* (method, bare path, peer) -> int: route index << 32 | peer index */
    PyObject *gidx;       /* id(group) -> index into gs */
    GStat *gs;
    Py_ssize_t ngs, capgs;
    Py_ssize_t *dirty;    /* indexes of dirty gs, ngs long at most */
    Py_ssize_t ndirty;
    PyObject *c_method, *c_path, *c_peer; /* the last key, by identity */
    Py_ssize_t c_r, c_p;
    long long nkind[2];
    int kind_first;       /* -1, or which kind (0 request, 1 response) was counted first since the flush */
    PyObject *proto[NPROTO];
    long long proton[NPROTO];
    int nproto;
    PyObject *lo, *hi;    /* smallest and largest ts pending */
    PyObject *getrandbits; /* stats.rng.getrandbits as of generation gbits_gen */
    long long gbits_gen;
    long long ts_gen;     /* the generation ts_ok was found in */
    int ts_ok;            /* Stats._first_ts and _last_ts are str or None (a damaged record may have set others) */
    long long gen;
    Py_ssize_t pending;
} Acc;

static PyTypeObject AccType;

static void acc_clear_cache(Acc *a) {
    Py_CLEAR(a->c_method);
    Py_CLEAR(a->c_path);
    Py_CLEAR(a->c_peer);
}

static int acc_traverse(Acc *a, visitproc visit, void *arg) {
    Py_VISIT(a->stats);
    Py_VISIT(a->hdrs);
    Py_VISIT(a->clv);
    Py_VISIT(a->keymap);
    Py_VISIT(a->gidx);
    Py_VISIT(a->getrandbits);
    for (Py_ssize_t i = 0; i < a->ngs; i++) {
        Py_VISIT(a->gs[i].group);
        Py_VISIT(a->gs[i].lat);
    }
    return 0;
}

static int acc_clear(Acc *a) {
    Py_CLEAR(a->stats);
    Py_CLEAR(a->hdrs);
    Py_CLEAR(a->clv);
    Py_CLEAR(a->keymap);
    Py_CLEAR(a->gidx);
    Py_CLEAR(a->getrandbits);
    acc_clear_cache(a);
    for (int i = 0; i < a->nproto; i++)
        Py_CLEAR(a->proto[i]);
    a->nproto = 0;
    Py_CLEAR(a->lo);
    Py_CLEAR(a->hi);
    for (Py_ssize_t i = 0; i < a->ngs; i++) {
        Py_CLEAR(a->gs[i].group);
        Py_CLEAR(a->gs[i].lat);
    }
    a->ngs = 0;
    return 0;
}

static void acc_dealloc(Acc *a) {
    PyObject_GC_UnTrack(a);
    acc_clear(a);
    PyMem_Free(a->gs);
    PyMem_Free(a->dirty);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *acc_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *stats, *hdrs, *clv;
    Py_ssize_t reservoir;
    if (!PyArg_ParseTuple(args, "OOnO:Acc", &stats, &hdrs, &reservoir, &clv))
        return NULL;
    if (!PyType_Check(hdrs) || ((PyTypeObject *)hdrs)->tp_dict == NULL || reservoir < 1) {
        PyErr_SetString(PyExc_TypeError, "Acc(stats, Headers, reservoir >= 1, content_length_value)");
        return NULL;
    }
    PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)hdrs)->tp_dict, s_content_length);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "Headers has no content_length slot");
        return NULL;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || m->offset < (Py_ssize_t)sizeof(PyObject) ||
        m->offset + (Py_ssize_t)sizeof(PyObject *) > ((PyTypeObject *)hdrs)->tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "Headers.content_length is not an object slot");
        return NULL;
    }
    Acc *a = (Acc *)type->tp_alloc(type, 0);
    if (a == NULL)
        return NULL;
    a->keymap = PyDict_New();
    a->gidx = PyDict_New();
    if (a->keymap == NULL || a->gidx == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    Py_INCREF(stats);
    a->stats = stats;
    Py_INCREF(hdrs);
    a->hdrs = (PyTypeObject *)hdrs;
    a->cl_off = m->offset;
    Py_INCREF(clv);
    a->clv = clv;
    a->reservoir = reservoir;
    a->kind_first = -1;
    a->gen = 1;
    return (PyObject *)a;
}

/* --------------------------------------------------------------------------------------- flush */

static int add_to_attr(PyObject *obj, PyObject *name, long long n) {
    PyObject *cur = PyObject_GetAttr(obj, name);
    if (cur == NULL)
        return -1;
    PyObject *dn = PyLong_FromLongLong(n);
    PyObject *sum = dn ? PyNumber_Add(cur, dn) : NULL;
    Py_DECREF(cur);
    Py_XDECREF(dn);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* counter[key] += n on a dict (a Counter: its missing keys count 0) */
static int add_to_item(PyObject *counter, PyObject *key, long long n) {
    if (!PyDict_Check(counter)) {
        PyErr_SetString(PyExc_TypeError, "a Stats counter is not a dict");
        return -1;
    }
    PyObject *cur = PyDict_GetItemWithError(counter, key);
    if (cur == NULL && PyErr_Occurred())
        return -1;
    PyObject *dn = PyLong_FromLongLong(n);
    if (dn == NULL)
        return -1;
    PyObject *sum = cur ? PyNumber_Add(cur, dn) : (Py_INCREF(dn), dn);
    Py_DECREF(dn);
    if (sum == NULL)
        return -1;
    int r = PyDict_SetItem(counter, key, sum);
    Py_DECREF(sum);
    return r;
}

static int flush_counter(PyObject *stats, PyObject *attr, PyObject **keys, long long *ns, int n) {
    if (n == 0)
        return 0;
    PyObject *c = PyObject_GetAttr(stats, attr);
    if (c == NULL)
        return -1;
    int r = 0;
    for (int i = 0; i < n && r == 0; i++)
        if (ns[i])
            r = add_to_item(c, keys[i], ns[i]);
    Py_DECREF(c);
    return r;
}

/* ts into stats.<attr> if it is smaller (lower) or larger than what is there, or that is None */
static int flush_ts(PyObject *stats, PyObject *attr, PyObject *ts, int op) {
    if (ts == NULL)
        return 0;
    PyObject *cur = PyObject_GetAttr(stats, attr);
    if (cur == NULL)
        return -1;
    int set = cur == Py_None ? 1 : PyObject_RichCompareBool(ts, cur, op);
    Py_DECREF(cur);
    if (set < 0)
        return -1;
    return set ? PyObject_SetAttr(stats, attr, ts) : 0;
}

static int flush_group(GStat *g) {
    for (int k = 0; k < 8; k++)
        if (g->d[k] && add_to_attr(g->group, s_d[k], g->d[k]) < 0)
            return -1;
    if (g->nst) {
        PyObject *c = PyObject_GetAttr(g->group, s_statuses);
        if (c == NULL)
            return -1;
        for (int i = 0; i < g->nst; i++) {
            PyObject *key = PyLong_FromLong(g->st[i]);
            int r = key ? add_to_item(c, key, g->stn[i]) : -1;
            Py_XDECREF(key);
            if (r < 0) {
                Py_DECREF(c);
                return -1;
            }
        }
        Py_DECREF(c);
    }
    if (g->seen != g->seen0) {
        PyObject *v = PyLong_FromLongLong(g->seen);
        int r = v ? PyObject_SetAttr(g->group, s_seen, v) : -1;
        Py_XDECREF(v);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Everything pending into the Python objects; a new generation (Python may change the groups next). The sums
 * are cleared even when a Python call fails (the error is raised: counting them twice would be worse). */
static int acc_flush(Acc *a) {
    int r = 0;
    a->gen++;
    if (a->pending == 0)
        return 0;
    if (a->stats == NULL) {
        PyErr_SetString(PyExc_ValueError, "Acc cleared");
        return -1;
    }
    PyObject *kinds[2] = {s_request, s_response};
    if (a->kind_first >= 0) {
        int f = a->kind_first;
        PyObject *ks[2] = {kinds[f], kinds[1 - f]};
        long long ns[2] = {a->nkind[f], a->nkind[1 - f]};
        r = flush_counter(a->stats, s_kinds_attr, ks, ns, 2);
    }
    if (r == 0)
        r = flush_counter(a->stats, s_protos_attr, a->proto, a->proton, a->nproto);
    if (r == 0)
        r = flush_ts(a->stats, s_first, a->lo, Py_LT);
    if (r == 0)
        r = flush_ts(a->stats, s_last, a->hi, Py_GT);
    for (Py_ssize_t i = 0; i < a->ndirty; i++) {
        GStat *g = &a->gs[a->dirty[i]];
        if (r == 0)
            r = flush_group(g);
        memset(g->d, 0, sizeof g->d);
        g->nst = 0;
        g->seen0 = g->seen;
        g->dirty = 0;
        Py_CLEAR(g->lat);
    }
    a->ndirty = 0;
    a->nkind[0] = a->nkind[1] = 0;
    a->kind_first = -1;
    for (int i = 0; i < a->nproto; i++)
        Py_CLEAR(a->proto[i]);
    a->nproto = 0;
    Py_CLEAR(a->lo);
    Py_CLEAR(a->hi);
    a->pending = 0;
    return r;
}

static PyObject *acc_flush_meth(Acc *a, PyObject *unused) {
    if (acc_flush(a) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------------------------- counting */

/* index of group g's GStat (made on first sight), or -1 with an exception */
static Py_ssize_t gstat_index(Acc *a, PyObject *g) {
    PyObject *id = PyLong_FromVoidPtr(g);
    if (id == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(a->gidx, id);
    if (v != NULL) {
        Py_DECREF(id);
        return PyLong_AsSsize_t(v);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(id);
        return -1;
    }
    if (a->ngs == a->capgs) {
        Py_ssize_t cap = a->capgs ? 2 * a->capgs : 16;
        GStat *gs = PyMem_Realloc(a->gs, cap * sizeof(GStat));
        Py_ssize_t *dirty = gs ? PyMem_Realloc(a->dirty, cap * sizeof(Py_ssize_t)) : NULL;
        if (gs)
            a->gs = gs;
        if (dirty)
            a->dirty = dirty;
        if (gs == NULL || dirty == NULL) {
            Py_DECREF(id);
            PyErr_NoMemory();
            return -1;
        }
        a->capgs = cap;
    }
    Py_ssize_t i = a->ngs;
    PyObject *iv = PyLong_FromSsize_t(i);
    if (iv == NULL || PyDict_SetItem(a->gidx, id, iv) < 0) {
        Py_DECREF(id);
        Py_XDECREF(iv);
        return -1;
    }
    Py_DECREF(id);
    Py_DECREF(iv);
    GStat *s = &a->gs[i];
    memset(s, 0, sizeof *s);
    Py_INCREF(g);
    s->group = g;
    a->ngs++;
    return i;
}

/* route and peer GStat indexes of (method, bare path, peer): Stats._find_groups on a new key */
static int lookup(Acc *a, PyObject *method, PyObject *path, PyObject *peer, Py_ssize_t *ri, Py_ssize_t *pi) {
    if (a->c_method == method && a->c_path == path && a->c_peer == peer) {
        *ri = a->c_r;
        *pi = a->c_p;
        return 0;
    }
    PyObject *bare = path;
    Py_INCREF(bare);
    if (path != Py_None) {
        Py_ssize_t q = PyUnicode_FindChar(path, '?', 0, PyUnicode_GET_LENGTH(path), 1);
        if (q == -2) {
            Py_DECREF(bare);
            return -1;
        }
        if (q >= 0) {
            Py_SETREF(bare, PyUnicode_Substring(path, 0, q));
            if (bare == NULL)
                return -1;
        }
    }
    PyObject *key = PyTuple_Pack(3, method, bare, peer);
    Py_DECREF(bare);
    if (key == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(a->keymap, key);
    long long packed;
    if (v != NULL) {
        packed = PyLong_AsLongLong(v);
    } else {
        if (PyErr_Occurred())
            goto fail;
        PyObject *gs = PyObject_CallMethodOneArg(a->stats, s_groups, key);
        if (gs == NULL)
            goto fail;
        if (!PyTuple_Check(gs) || PyTuple_GET_SIZE(gs) != 2) {
            Py_DECREF(gs);
            PyErr_SetString(PyExc_TypeError, "Stats._find_groups did not return two groups");
            goto fail;
        }
        Py_ssize_t r = gstat_index(a, PyTuple_GET_ITEM(gs, 0));
        Py_ssize_t p = r < 0 ? -1 : gstat_index(a, PyTuple_GET_ITEM(gs, 1));
        Py_DECREF(gs);
        if (p < 0)
            goto fail;
        packed = ((long long)r << 32) | p;
        if (PyDict_GET_SIZE(a->keymap) >= MAX_KEYS)
            PyDict_Clear(a->keymap);
        PyObject *pv = PyLong_FromLongLong(packed);
        if (pv == NULL || PyDict_SetItem(a->keymap, key, pv) < 0) {
            Py_XDECREF(pv);
            goto fail;
        }
        Py_DECREF(pv);
    }
    Py_DECREF(key);
    *ri = (Py_ssize_t)(packed >> 32);
    *pi = (Py_ssize_t)(packed & 0xffffffffLL);
    Py_INCREF(method);
    Py_INCREF(path);
    Py_INCREF(peer);
    acc_clear_cache(a);
    a->c_method = method;
    a->c_path = path;
    a->c_peer = peer;
    a->c_r = *ri;
    a->c_p = *pi;
    return 0;
fail:
    Py_DECREF(key);
    return -1;
}

/* the GStat up to date for this generation: seen_latencies and the latencies list read from the Group */
static int refresh(Acc *a, GStat *g) {
    if (g->gen == a->gen)
        return 0;
    PyObject *seen = PyObject_GetAttr(g->group, s_seen);
    if (seen == NULL)
        return -1;
    long long n = PyLong_AsLongLong(seen);
    Py_DECREF(seen);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *lat = PyObject_GetAttr(g->group, s_latencies);
    if (lat == NULL)
        return -1;
    if (!PyList_CheckExact(lat)) {
        Py_DECREF(lat);
        PyErr_SetString(PyExc_TypeError, "Group.latencies is not a list");
        return -1;
    }
    Py_XSETREF(g->lat, lat);
    g->seen = g->seen0 = n;
    g->gen = a->gen;
    return 0;
}

/* random.Random.randrange(n) for n > 0, as Random._randbelow_with_getrandbits draws it */
static long long randbelow(Acc *a, long long n) {
    if (a->gbits_gen != a->gen || a->getrandbits == NULL) {
        PyObject *rng = PyObject_GetAttr(a->stats, s_rng);
        if (rng == NULL)
            return -1;
        Py_XSETREF(a->getrandbits, PyObject_GetAttr(rng, s_getrandbits));
        Py_DECREF(rng);
        if (a->getrandbits == NULL)
            return -1;
        a->gbits_gen = a->gen;
    }
    int k = 64 - __builtin_clzll((unsigned long long)n);
    PyObject *kk = PyLong_FromLong(k);
    if (kk == NULL)
        return -1;
    long long r;
    do {
        PyObject *v = PyObject_Vectorcall(a->getrandbits, &kk, 1, NULL);
        if (v == NULL) {
            Py_DECREF(kk);
            return -1;
        }
        r = PyLong_AsLongLong(v);
        Py_DECREF(v);
        if (r == -1 && PyErr_Occurred()) {
            Py_DECREF(kk);
            return -1;
        }
    } while (r >= n);
    Py_DECREF(kk);
    return r;
}

static int latency(Acc *a, GStat *g, PyObject *lat) {
    g->seen++;
    if (PyList_GET_SIZE(g->lat) < a->reservoir)
        return PyList_Append(g->lat, lat);
    long long j = randbelow(a, g->seen);
    if (j < 0)
        return -1;
    if (j < a->reservoir && j < PyList_GET_SIZE(g->lat)) {
        Py_INCREF(lat);
        PyList_SetItem(g->lat, (Py_ssize_t)j, lat);
    }
    return 0;
}

static inline int str_eq(PyObject *x, PyObject *interned) {
    return x == interned || (PyUnicode_CheckExact(x) && PyUnicode_Compare(x, interned) == 0);
}

/* Content-Length as statsbatch.content_length_value gives it: *out -1 for None; 0 ok, 1 declined, -1 error */
static int clen_value(Acc *a, PyObject *v, long long *out) {
    *out = -1;
    if (v == Py_None)
        return 0;
    if (!PyUnicode_CheckExact(v))
        return 1;
    if (PyUnicode_IS_ASCII(v)) {
        const char *s = (const char *)PyUnicode_DATA(v);
        Py_ssize_t n = PyUnicode_GET_LENGTH(v), i = 0, e = n;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        while (e > i && (s[e - 1] == ' ' || s[e - 1] == '\t'))
            e--;
        if (i == e && (n == 0 || i == n))
            return 0; /* empty, or blanks only: int("") fails, None */
        if (e - i <= 15) {
            long long x = 0;
            Py_ssize_t k = i;
            for (; k < e && s[k] >= '0' && s[k] <= '9'; k++)
                x = x * 10 + (s[k] - '0');
            if (k == e) {
                *out = x;
                return 0;
            }
        }
    }
    PyObject *r = PyObject_CallOneArg(a->clv, v); /* anything else: Python says */
    if (r == NULL)
        return -1;
    if (r == Py_None) {
        Py_DECREF(r);
        return 0;
    }
    long long x = PyLong_CheckExact(r) ? PyLong_AsLongLong(r) : -1;
    Py_DECREF(r);
    if (x == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (x < 0 || x > MAX_CLEN)
        return 1;
    *out = x;
    return 0;
}

#define GET(var, key)                                   \
    do {                                                \
        var = PyDict_GetItemWithError(rec, key);        \
        if (var == NULL)                                \
            return PyErr_Occurred() ? -1 : 1;           \
    } while (0)
#define STR_OR_NONE(x) ((x) == Py_None || PyUnicode_CheckExact(x))

/* count one record: 0 counted, 1 declined (nothing changed), -1 error */
static int acc_count(Acc *a, PyObject *rec) {
    if (a->stats == NULL || a->keymap == NULL || a->gidx == NULL) {
        PyErr_SetString(PyExc_ValueError, "Acc cleared");
        return -1;
    }
    PyObject *kind, *type, *proto, *ts, *conn, *method, *path, *peer, *hs, *cl, *status = Py_None, *lat = Py_None;
    if (!PyDict_CheckExact(rec))
        return 1;
    GET(kind, s_kind);
    int resp;
    if (str_eq(kind, s_request))
        resp = 0;
    else if (str_eq(kind, s_response))
        resp = 1;
    else
        return 1;
    GET(type, s_type);
    if (!str_eq(type, s_http))
        return 1;
    int has = PyDict_Contains(rec, s_mcp);
    if (has)
        return has < 0 ? -1 : 1;
    GET(proto, s_proto);
    GET(ts, s_ts);
    GET(conn, s_conn);
    if (!STR_OR_NONE(proto) || !STR_OR_NONE(ts))
        return 1;
    if (conn == Py_None)
        peer = Py_None;
    else if (PyDict_CheckExact(conn)) {
        peer = PyDict_GetItemWithError(conn, s_peer);
        if (peer == NULL) {
            if (PyErr_Occurred())
                return -1;
            peer = Py_None;
        }
    } else
        return 1;
    if (!STR_OR_NONE(peer))
        return 1;
    if (!resp) {
        GET(method, s_method);
        GET(path, s_path);
    } else {
        PyObject *req;
        GET(req, s_request);
        GET(status, s_status);
        GET(lat, s_latency);
        if (req == Py_None)
            method = path = Py_None;
        else if (PyDict_CheckExact(req)) {
            method = PyDict_GetItemWithError(req, s_method);
            if (method == NULL && PyErr_Occurred())
                return -1;
            path = PyDict_GetItemWithError(req, s_path);
            if (path == NULL && PyErr_Occurred())
                return -1;
            if (method == NULL)
                method = Py_None;
            if (path == NULL)
                path = Py_None;
        } else
            return 1;
    }
    if (!STR_OR_NONE(method) || !STR_OR_NONE(path))
        return 1;
    if (method == Py_None || PyUnicode_GET_LENGTH(method) == 0)
        method = s_qmark;
    long st = 0;
    if (status != Py_None) {
        if (!PyLong_CheckExact(status))
            return 1;
        int ovf;
        st = PyLong_AsLongAndOverflow(status, &ovf);
        if (ovf || (st == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
    }
    if (lat != Py_None && !PyFloat_CheckExact(lat)) {
        if (!PyLong_CheckExact(lat))
            return 1;
        double x = PyLong_AsDouble(lat);
        if (x == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
    }
    GET(hs, s_headers);
    if (Py_TYPE(hs) != a->hdrs)
        return 1;
    cl = *(PyObject **)((char *)hs + a->cl_off);
    if (cl == NULL)
        return 1;
    long long clen;
    int c = clen_value(a, cl, &clen);
    if (c)
        return c;
    if (ts != Py_None && PyUnicode_GET_LENGTH(ts) && a->ts_gen != a->gen) {
        /* compared with a timestamp of another type, Stats._add raises: it does, at that record */
        a->ts_ok = 1;
        PyObject *attrs[2] = {s_first, s_last};
        for (int i = 0; i < 2; i++) {
            PyObject *v = PyObject_GetAttr(a->stats, attrs[i]);
            if (v == NULL)
                return -1;
            a->ts_ok &= STR_OR_NONE(v);
            Py_DECREF(v);
        }
        a->ts_gen = a->gen;
    }
    if (ts != Py_None && PyUnicode_GET_LENGTH(ts) && !a->ts_ok)
        return 1;
    /* ---- the record is taken: find its groups (made now, in record order, if new) */
    Py_ssize_t idx[2];
    if (lookup(a, method, path, peer, &idx[0], &idx[1]) < 0)
        return -1;
    int body = resp && clen >= 0 && !str_eq(method, s_HEAD) && !(status != Py_None && (st == 204 || st == 304));
    /* what would not fit the pending sums is flushed first */
    int need = 0;
    if (a->nproto == NPROTO) {
        need = 1;
        for (int k = 0; k < NPROTO; k++)
            if (a->proto[k] == proto || (proto != Py_None && a->proto[k] != Py_None &&
                                         PyUnicode_Compare(a->proto[k], proto) == 0))
                need = 0;
    }
    for (int i = 0; i < 2 && !need; i++) {
        GStat *g = &a->gs[idx[i]];
        if (g->d[D_RQB] > (1LL << 61) || g->d[D_RSB] > (1LL << 61) || g->d[D_REQ] > (1LL << 61) ||
            g->d[D_RESP] > (1LL << 61))
            need = 1;
        if (resp && status != Py_None && g->nst == NST) {
            int found = 0;
            for (int k = 0; k < g->nst; k++)
                found |= g->st[k] == st;
            need |= !found;
        }
    }
    if (need && acc_flush(a) < 0)
        return -1;
    PyObject *latobj = NULL;
    if (lat != Py_None) {
        if (PyFloat_CheckExact(lat)) {
            Py_INCREF(lat);
            latobj = lat;
        } else if ((latobj = PyFloat_FromDouble(PyLong_AsDouble(lat))) == NULL)
            return -1;
    }
    for (int i = 0; i < 2; i++)
        if (refresh(a, &a->gs[idx[i]]) < 0) {
            Py_XDECREF(latobj);
            return -1;
        }
    /* ---- counted (only a failing Python call below can stop it half way: an error is raised) */
    if (a->kind_first < 0)
        a->kind_first = resp;
    a->nkind[resp]++;
    int p = 0;
    for (; p < a->nproto; p++)
        if (a->proto[p] == proto || (proto != Py_None && a->proto[p] != Py_None &&
                                     PyUnicode_Compare(a->proto[p], proto) == 0))
            break;
    if (p == a->nproto) {
        Py_INCREF(proto);
        a->proto[a->nproto++] = proto;
        a->proton[p] = 0;
    }
    a->proton[p]++;
    if (ts != Py_None && PyUnicode_GET_LENGTH(ts)) {
        if (a->lo == NULL || PyUnicode_Compare(ts, a->lo) < 0) {
            Py_INCREF(ts);
            Py_XSETREF(a->lo, ts);
        }
        if (a->hi == NULL || PyUnicode_Compare(ts, a->hi) > 0) {
            Py_INCREF(ts);
            Py_XSETREF(a->hi, ts);
        }
    }
    a->pending++;
    int r = 0;
    for (int i = 0; i < 2; i++) {
        GStat *g = &a->gs[idx[i]];
        if (!g->dirty) {
            g->dirty = 1;
            a->dirty[a->ndirty++] = idx[i];
        }
        if (!resp) {
            g->d[D_REQ]++;
            if (clen >= 0) {
                g->d[D_RQB] += clen;
                g->d[D_RQK]++;
            }
            continue;
        }
        g->d[D_RESP]++;
        if (status != Py_None) {
            int k = 0;
            while (k < g->nst && g->st[k] != st)
                k++;
            if (k == g->nst) {
                g->st[k] = st;
                g->stn[k] = 0;
                g->nst++;
            }
            g->stn[k]++;
            if (st >= 400 && st < 500)
                g->d[D_4XX]++;
            else if (st >= 500)
                g->d[D_5XX]++;
        }
        if (latobj != NULL && r == 0)
            r = latency(a, g, latobj);
        if (body) {
            g->d[D_RSB] += clen;
            g->d[D_RSK]++;
        }
    }
    Py_XDECREF(latobj);
    return r;
}

static PyObject *acc_observe(Acc *a, PyObject *rec) {
    int r = acc_count(a, rec);
    if (r < 0)
        return NULL;
    if (r == 1) /* Stats.add flushes what is pending, then counts it */
        return PyObject_CallMethodOneArg(a->stats, s_add, rec);
    Py_RETURN_NONE;
}

static PyMethodDef acc_methods[] = {
    {"observe", (PyCFunction)acc_observe, METH_O, "observe(rec): Stats.observe (counted here or by Stats.add)"},
    {"flush", (PyCFunction)acc_flush_meth, METH_NOARGS, "flush(): the pending sums into the Stats' objects"},
    {NULL}};

static PyMemberDef acc_members[] = {
    {"pending", T_PYSSIZET, offsetof(Acc, pending), READONLY, "records counted here since the last flush"},
    {NULL}};

static PyTypeObject AccType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._statsfast.Acc",
    .tp_basicsize = sizeof(Acc),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Stats.observe's C path (see the module's docstring)",
    .tp_new = acc_new,
    .tp_dealloc = (destructor)acc_dealloc,
    .tp_traverse = (traverseproc)acc_traverse,
    .tp_clear = (inquiry)acc_clear,
    .tp_methods = acc_methods,
    .tp_members = acc_members,
};

/* ------------------------------------------------------------------------------------ JsonlWriter */

typedef struct {
    PyObject_HEAD
    PyObject *fwrite, *dumps, *option;
    long long written;
} Writer;

static PyTypeObject WriterType;

static int writer_traverse(Writer *w, visitproc visit, void *arg) {
    Py_VISIT(w->fwrite);
    Py_VISIT(w->dumps);
    Py_VISIT(w->option);
    return 0;
}

static int writer_clear(Writer *w) {
    Py_CLEAR(w->fwrite);
    Py_CLEAR(w->dumps);
    Py_CLEAR(w->option);
    return 0;
}

static void writer_dealloc(Writer *w) {
    PyObject_GC_UnTrack(w);
    writer_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *writer_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *fwrite, *dumps, *option;
    if (!PyArg_ParseTuple(args, "OOO:JsonlWriter", &fwrite, &dumps, &option))
        return NULL;
    Writer *w = (Writer *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    Py_INCREF(fwrite);
    w->fwrite = fwrite;
    Py_INCREF(dumps);
    w->dumps = dumps;
    Py_INCREF(option);
    w->option = option;
    return (PyObject *)w;
}

static int writer_write_c(Writer *w, PyObject *rec) {
    if (w->fwrite == NULL) {
        PyErr_SetString(PyExc_ValueError, "JsonlWriter cleared");
        return -1;
    }
    PyObject *args[2] = {rec, w->option};
    PyObject *data = PyObject_Vectorcall(w->dumps, args, 1, s_kwnames);
    if (data == NULL)
        return -1;
    PyObject *r = PyObject_Vectorcall(w->fwrite, &data, 1, NULL);
    Py_DECREF(data);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    w->written++;
    return 0;
}

static PyObject *writer_write(Writer *w, PyObject *rec) {
    if (writer_write_c(w, rec) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef writer_methods[] = {
    {"write", (PyCFunction)writer_write, METH_O, "write(rec): write(dumps(rec, option=option)), counted"},
    {NULL}};

static PyMemberDef writer_members[] = {
    {"written", T_LONGLONG, offsetof(Writer, written), 0, "records written"},
    {NULL}};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._statsfast.JsonlWriter",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "JsonlSink.write's C path: JsonlWriter(file.write, orjson.dumps, option)",
    .tp_new = writer_new,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_methods = writer_methods,
    .tp_members = writer_members,
};

/* ------------------------------------------------------------------------------------------ Chain */

typedef struct {
    PyObject_HEAD
    PyObject *observers; /* tuple of callables */
    PyObject *inner;     /* callable */
    long long written;
} Chain;

static PyTypeObject ChainType;

/* the C object behind a bound C method of ours (acc.observe, writer.write), else NULL */
static PyObject *bound_self(PyObject *f, PyTypeObject *type, void *meth) {
    if (!PyCFunction_Check(f) || PyCFunction_GET_FUNCTION(f) != (PyCFunction)meth)
        return NULL;
    PyObject *self = PyCFunction_GET_SELF(f);
    return self != NULL && Py_IS_TYPE(self, type) ? self : NULL;
}

static int chain_traverse(Chain *c, visitproc visit, void *arg) {
    Py_VISIT(c->observers);
    Py_VISIT(c->inner);
    return 0;
}

static int chain_clear(Chain *c) {
    Py_CLEAR(c->observers);
    Py_CLEAR(c->inner);
    return 0;
}

static void chain_dealloc(Chain *c) {
    PyObject_GC_UnTrack(c);
    chain_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *chain_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *observers, *inner;
    if (!PyArg_ParseTuple(args, "O!O:Chain", &PyTuple_Type, &observers, &inner))
        return NULL;
    Chain *c = (Chain *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    Py_INCREF(observers);
    c->observers = observers;
    Py_INCREF(inner);
    c->inner = inner;
    return (PyObject *)c;
}

static PyObject *chain_write(Chain *c, PyObject *rec) {
    if (c->observers == NULL) {
        PyErr_SetString(PyExc_ValueError, "Chain cleared");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(c->observers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(c->observers, i);
        PyObject *acc = bound_self(f, &AccType, (void *)acc_observe);
        PyObject *r = acc != NULL ? acc_observe((Acc *)acc, rec) : PyObject_Vectorcall(f, &rec, 1, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    PyObject *w = bound_self(c->inner, &WriterType, (void *)writer_write);
    if (w != NULL) {
        if (writer_write_c((Writer *)w, rec) < 0)
            return NULL;
    } else {
        PyObject *r = PyObject_Vectorcall(c->inner, &rec, 1, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    c->written++;
    Py_RETURN_NONE;
}

static PyMethodDef chain_methods[] = {
    {"write", (PyCFunction)chain_write, METH_O, "write(rec): every observer, then the inner sink; counted"},
    {NULL}};

static PyMemberDef chain_members[] = {
    {"written", T_LONGLONG, offsetof(Chain, written), 0, "records written"},
    {NULL}};

static PyTypeObject ChainType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._statsfast.Chain",
    .tp_basicsize = sizeof(Chain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "OutputSink.write's C path without a filter: Chain((observe, ...), inner_write)",
    .tp_new = chain_new,
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_traverse = (traverseproc)chain_traverse,
    .tp_clear = (inquiry)chain_clear,
    .tp_methods = chain_methods,
    .tp_members = chain_members,
};

/* ------------------------------------------------------------------------------------------ module */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_statsfast", "C fast path of the output chain and the statistics observer.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

static int intern_all(void) {
#define I(var, text)                                 \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    I(s_kind, "kind") I(s_type, "type") I(s_proto, "proto") I(s_ts, "ts") I(s_conn, "conn") I(s_method, "method")
    I(s_path, "path") I(s_request, "request") I(s_response, "response") I(s_status, "status")
    I(s_latency, "latency_ms") I(s_headers, "headers") I(s_mcp, "mcp") I(s_http, "http") I(s_peer, "peer")
    I(s_qmark, "?") I(s_HEAD, "HEAD") I(s_option, "option") I(s_groups, "_find_groups") I(s_add, "add") I(s_rng, "rng")
    I(s_getrandbits, "getrandbits") I(s_seen, "seen_latencies") I(s_latencies, "latencies")
    I(s_statuses, "statuses") I(s_kinds_attr, "_kinds") I(s_protos_attr, "_protos") I(s_first, "_first_ts")
    I(s_last, "_last_ts") I(s_content_length, "content_length")
#undef I
    for (int k = 0; k < 8; k++)
        if ((s_d[k] = PyUnicode_InternFromString(d_names[k])) == NULL)
            return -1;
    s_kwnames = PyTuple_Pack(1, s_option);
    return s_kwnames == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__statsfast(void) {
    if (s_kwnames == NULL && intern_all() < 0)
        return NULL;
    if (PyType_Ready(&AccType) < 0 || PyType_Ready(&WriterType) < 0 || PyType_Ready(&ChainType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &AccType) < 0 || PyModule_AddType(m, &WriterType) < 0 ||
        PyModule_AddType(m, &ChainType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
