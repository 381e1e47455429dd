/* hdrlog._h1feed: C fast path of HTTP/1 connection feeding (hdrlog.http1.Http1Parser.feed's common case).
 *
 * Feeder(api, Http1Parser, HttpMessage, Mcp, BodySink, consts).feed(parser, data, ts_ns) does what
 * Http1Parser.feed does with the fast path on (http1_fast.FastHeads) for a chunk in the common state, and returns
 * the finished messages; it returns None, having changed nothing, for anything else (the Python feed then runs):
 *
 *  - the parser in state "http", llhttp between messages (not _in_msg), Http1Parser.fast and .cfeed true;
 *  - a chunk that continues the body of a message the fast path took (_fskip: skipped, or handed to the held
 *    message's sink) and ends inside it or at its end;
 *  - else no body under way and a head that _h1fast's parser takes at the chunk's start, with no segment
 *    boundary inside it (http1_scan.segments), whose body (by Content-Length) reaches at least the chunk's end: no
 *    second message in the chunk, so no segments to find. The one case known only after response_to was asked
 *    (a HEAD response with bytes after its head) goes on in Python (Http1Parser._resume) exactly where
 *    FastHeads._fast would.
 *
 * The parser's, the messages' and the sinks' state lives in their Python slots, read and written at the offsets of
 * their member descriptors (found once, when the Feeder is made; a type that does not look so makes Feeder fail
 * and the Python code runs). The MCP body hook (hdrlog.mcp.Mcp, exactly that type) is decided here from the
 * Content-Type, Mcp-Session-Id and MCP-Protocol-Version values the head parser found (no second pass over the
 * headers): no hook call for a message it would not hold; a BodySink made here for a JSON/SSE message; a
 * whole body of fewer than SNIFF_BYTES bytes without "jsonrpc" ends its sink without add()/finish() calls (they
 * would do nothing else). Any other hook is called as Python calls it; a non-ASCII Content-Type or an Mcp-*
 * header calls Mcp itself. Python exceptions raised by hooks and sinks are handled as Http1Parser.feed handles
 * them (re-raised with Http1Parser.debug, else Http1Parser._fail).
 *
 * tests/test_h1feed.py compares this with the Python path on every fixture and on random and hostile streams.
 * No static mutable state: everything a Feeder knows is in the Feeder object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* must match _h1fast.c's h1_head and h1_api_t (version and size checked) */
#define H1_API_VERSION 1
typedef struct {
    Py_ssize_t end;
    PyObject *first, *second, *headers;
    PyObject *host;
    long long clen;
    int minor, status;
    PyObject *ctype, *session, *mversion;
    int ctype_ascii;
} h1_head;
typedef struct {
    int version;
    size_t head_size;
    int (*parse_into)(const unsigned char *, Py_ssize_t, Py_ssize_t, int, Py_ssize_t, h1_head *);
} h1_api_t;

/* Http1Parser slots used here */
enum { P_STATE, P_KIND, P_RT, P_RTSKIP, P_P, P_INMSG, P_METHOD, P_BODY, P_SINK, P_HELD, P_BMODE, P_BREM, P_CSTATE,
       P_CLINE, P_SIDE, P_FSKIP, P_TENT, P_OUT, P_N };
static const char *const p_names[P_N] = {"state", "kind", "_response_to", "_rt_skip", "_p", "_in_msg", "_method",
                                         "_body", "_sink", "_held", "_bmode", "_brem", "_cstate", "_cline", "_side",
                                         "_fskip", "_tentative", "_out"};
/* HttpMessage fields, in __init__'s order */
enum { M_KIND, M_PROTO, M_TS, M_HEADERS, M_METHOD, M_PATH, M_AUTH, M_STATUS, M_REASON, M_TRUNC, M_STREAM, M_LAT,
       M_REQ, M_EXTRA, M_N };
static const char *const m_names[M_N] = {"kind", "proto", "ts_ns", "headers", "method", "path", "authority",
                                         "status", "reason", "truncated", "stream", "latency_ms", "request", "extra"};
enum { R_Q, R_STALE, R_N };
static const char *const r_names[R_N] = {"_q", "_stale"};
enum { O_LIMIT, O_CAND, O_N };
static const char *const o_names[O_N] = {"limit", "candidates"};
enum { K_OWNER, K_MSG, K_SSE, K_SESSION, K_VERSION, K_MCPHDR, K_BUF, K_TRUNC, K_DECIDED, K_DONE, K_N };
static const char *const k_names[K_N] = {"owner", "msg", "sse", "session", "version", "mcp_hdr", "buf",
                                         "truncated", "decided", "done"};

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

typedef struct {
    PyObject_HEAD
    const h1_api_t *api;
    PyObject *api_cap;
    PyTypeObject *ptype, *mtype, *otype, *ktype;  /* Http1Parser, HttpMessage, Mcp, BodySink */
    Py_ssize_t poff[P_N], moff[M_N], ooff[O_N], koff[K_N];
    PyObject *after[3];  /* http1_fast.AFTER */
    PyObject *no_out;    /* http1._NO_OUT */
    Py_ssize_t max_head, sniff;
    /* strings */
    PyObject *s_http, *s_request, *s_response, *s_tunnel, *s_side, *s_size, *s_head, *s_connect, *s_get;
    PyObject *s_11, *s_10, *s_fast, *s_cfeed, *s_debug, *s_fail, *s_resume, *s_add, *s_finish, *empty_bytes;
    /* hdrlog.pairing.Pairer and its responders (_response_to_in, _response_to_out): read here, not called */
    PyTypeObject *rtype;
    PyObject *rt_in, *rt_out;
    Py_ssize_t roff[2];
} Feeder;

/* offsets of the member descriptors (object slots) of `names` in `type`; 0 if one is not such a slot */
static int find_slots(PyTypeObject *type, const char *const *names, int n, Py_ssize_t *off) {
    if (!PyType_Check(type) || type->tp_dict == NULL || type->tp_itemsize != 0)
        return 0;
    for (int k = 0; k < n; k++) {
        PyObject *d = PyDict_GetItemString(type->tp_dict, names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            /* inherited from a base (Http1Parser's mixins have empty __slots__: not expected) */
            return 0;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject) ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize)
            return 0;
        off[k] = m->offset;
    }
    return 1;
}

static void set_slot(PyObject *o, Py_ssize_t off, PyObject *v) {  /* v: borrowed */
    Py_INCREF(v);
    Py_XSETREF(SLOT(o, off), v);
}

static int set_slot_ll(PyObject *o, Py_ssize_t off, long long v) {
    PyObject *x = PyLong_FromLongLong(v);
    if (x == NULL)
        return -1;
    Py_XSETREF(SLOT(o, off), x);
    return 0;
}

/* a slot holding an int that fits a long long: 1 with *v; 0 if not (unset, not an int, too big) */
static int get_ll(PyObject *o, Py_ssize_t off, long long *v) {
    PyObject *x = SLOT(o, off);
    if (x == NULL || !PyLong_CheckExact(x))
        return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (overflow || (*v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static int str_is(PyObject *a, PyObject *b) {  /* b: an interned str */
    if (a == b)
        return 1;
    return a != NULL && PyUnicode_CheckExact(a) && PyUnicode_Compare(a, b) == 0;
}

static void feeder_dealloc(Feeder *F) {
    PyObject_GC_UnTrack(F);
    Py_CLEAR(F->api_cap);
    Py_CLEAR(F->ptype);
    Py_CLEAR(F->mtype);
    Py_CLEAR(F->otype);
    Py_CLEAR(F->ktype);
    for (int k = 0; k < 3; k++)
        Py_CLEAR(F->after[k]);
    Py_CLEAR(F->no_out);
    Py_CLEAR(F->rtype);
    Py_CLEAR(F->rt_in);
    Py_CLEAR(F->rt_out);
    PyObject **strs[] = {&F->s_http, &F->s_request, &F->s_response, &F->s_tunnel, &F->s_side, &F->s_size,
                         &F->s_head, &F->s_connect, &F->s_get, &F->s_11, &F->s_10, &F->s_fast, &F->s_cfeed,
                         &F->s_debug, &F->s_fail, &F->s_resume, &F->s_add, &F->s_finish, &F->empty_bytes};
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
        Py_CLEAR(*strs[k]);
    Py_TYPE(F)->tp_free((PyObject *)F);  /* a static type: its instances hold no reference to it */
}

static int feeder_traverse(Feeder *F, visitproc visit, void *arg) {
    Py_VISIT(F->ptype);
    Py_VISIT(F->mtype);
    Py_VISIT(F->otype);
    Py_VISIT(F->ktype);
    Py_VISIT(F->rtype);
    Py_VISIT(F->rt_in);
    Py_VISIT(F->rt_out);
    return 0;
}

/* Feeder(api, Http1Parser, HttpMessage, Mcp, BodySink, AFTER, NO_OUT, MAX_HEAD, SNIFF_BYTES, Pairer) */
static PyObject *feeder_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    PyObject *cap, *pt, *mt, *ot, *kt, *after, *no_out, *rtype;
    Py_ssize_t max_head, sniff;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnO", &cap, &pt, &mt, &ot, &kt, &after, &no_out, &max_head, &sniff, &rtype))
        return NULL;
    const h1_api_t *api = PyCapsule_GetPointer(cap, "hdrlog._h1fast.api");
    if (api == NULL)
        return NULL;
    if (api->version != H1_API_VERSION || api->head_size != sizeof(h1_head)) {
        PyErr_SetString(PyExc_ImportError, "hdrlog._h1fast's api is not the one _h1feed was built for");
        return NULL;
    }
    if (!PyTuple_CheckExact(after) || PyTuple_GET_SIZE(after) != 3) {
        PyErr_SetString(PyExc_TypeError, "AFTER must be a 3-tuple");
        return NULL;
    }
    Feeder *F = (Feeder *)tp->tp_alloc(tp, 0);
    if (F == NULL)
        return NULL;
    F->api = api;
    Py_INCREF(cap);
    F->api_cap = cap;
    PyObject *types[4] = {pt, mt, ot, kt};
    for (int k = 0; k < 4; k++)
        Py_INCREF(types[k]);
    F->ptype = (PyTypeObject *)pt;
    F->mtype = (PyTypeObject *)mt;
    F->otype = (PyTypeObject *)ot;
    F->ktype = (PyTypeObject *)kt;
    for (int k = 0; k < 3; k++) {
        F->after[k] = PyTuple_GET_ITEM(after, k);
        Py_INCREF(F->after[k]);
    }
    Py_INCREF(no_out);
    F->no_out = no_out;
    F->max_head = max_head;
    F->sniff = sniff;
    if (!find_slots(F->ptype, p_names, P_N, F->poff) || !find_slots(F->mtype, m_names, M_N, F->moff) ||
        !find_slots(F->otype, o_names, O_N, F->ooff) || !find_slots(F->ktype, k_names, K_N, F->koff)) {
        PyErr_SetString(PyExc_TypeError, "Feeder: a type's fields are not the object slots expected");
        goto fail;
    }
    Py_INCREF(rtype);
    F->rtype = (PyTypeObject *)rtype;
    if (!find_slots(F->rtype, r_names, R_N, F->roff)) {
        PyErr_SetString(PyExc_TypeError, "Feeder: Pairer's fields are not the object slots expected");
        goto fail;
    }
    F->rt_in = PyDict_GetItemString(F->rtype->tp_dict, "_response_to_in");
    F->rt_out = PyDict_GetItemString(F->rtype->tp_dict, "_response_to_out");
    if (F->rt_in == NULL || F->rt_out == NULL) {
        PyErr_SetString(PyExc_TypeError, "Feeder: Pairer has no _response_to_in/_response_to_out");
        F->rt_in = F->rt_out = NULL;
        goto fail;
    }
    Py_INCREF(F->rt_in);
    Py_INCREF(F->rt_out);
    if (PyDict_GetItemString(F->mtype->tp_dict, "__post_init__") != NULL || F->mtype->tp_alloc == NULL ||
        F->ktype->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "Feeder: HttpMessage or BodySink cannot be made here");
        goto fail;
    }
    struct { PyObject **dst; const char *s; } strs[] = {
        {&F->s_http, "http"}, {&F->s_request, "request"}, {&F->s_response, "response"}, {&F->s_tunnel, "tunnel"},
        {&F->s_side, "side"}, {&F->s_size, "size"}, {&F->s_head, "HEAD"}, {&F->s_connect, "CONNECT"},
        {&F->s_get, "GET"}, {&F->s_11, "http/1.1"}, {&F->s_10, "http/1.0"}, {&F->s_fast, "fast"},
        {&F->s_cfeed, "cfeed"}, {&F->s_debug, "debug"}, {&F->s_fail, "_fail"}, {&F->s_resume, "_resume"},
        {&F->s_add, "add"}, {&F->s_finish, "finish"},
    };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        *strs[k].dst = PyUnicode_InternFromString(strs[k].s);
        if (*strs[k].dst == NULL)
            goto fail;
    }
    F->empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (F->empty_bytes == NULL)
        goto fail;
    return (PyObject *)F;
fail:
    Py_DECREF(F);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ one feed call */

typedef struct {
    Feeder *F;
    PyObject *p, *data, *out;
    const unsigned char *buf;
    Py_ssize_t n;
    long long finals;
} Call;

static int is_final_msg(Call *c, PyObject *msg) {
    Feeder *F = c->F;
    if (!str_is(SLOT(msg, F->moff[M_KIND]), F->s_response))
        return 0;
    PyObject *st = SLOT(msg, F->moff[M_STATUS]);
    if (st == NULL || st == Py_None)
        return 1;
    long s = PyLong_AsLong(st);
    if (s == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;  /* not an int we can read: is_final(None)'s answer */
    }
    return s >= 200 || s == 101 || s < 100;
}

/* BodyCapture._release(complete): complete 1 / 0 = True / False, -1 = None. -1 on a Python error. */
static int release(Call *c, int complete) {
    Feeder *F = c->F;
    PyObject *p = c->p;
    PyObject *msg = SLOT(p, F->poff[P_HELD]), *sink = SLOT(p, F->poff[P_SINK]);
    SLOT(p, F->poff[P_HELD]) = Py_NewRef(Py_None);  /* the references move to msg and sink */
    SLOT(p, F->poff[P_SINK]) = Py_NewRef(Py_None);
    int rc = 0;
    if (sink != NULL && sink != Py_None && complete >= 0) {
        PyObject *r = PyObject_CallMethodOneArg(sink, F->s_finish, complete ? Py_True : Py_False);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    if (rc == 0 && msg != NULL && msg != Py_None) {
        if (PyList_Append(c->out, msg) < 0)
            rc = -1;
        else if (is_final_msg(c, msg))
            c->finals++;
    }
    Py_XDECREF(msg);
    Py_XDECREF(sink);
    return rc;
}

/* a whole body s[:k] that a fresh BodySink of `owner` (an Mcp), not decided (no Mcp-* header), would take with
 * add() and drop at finish(True) without any other effect: within the owner's limit, too short to be sniffed
 * (< SNIFF_BYTES) and without "jsonrpc" */
static int body_is_quiet(Call *c, PyObject *owner, const unsigned char *s, Py_ssize_t k) {
    Feeder *F = c->F;
    long long limit;
    if (k >= c->F->sniff || Py_TYPE(owner) != F->otype || !get_ll(owner, F->ooff[O_LIMIT], &limit) || k > limit)
        return 0;
    static const char needle[] = "\"jsonrpc\"";
    if (k >= (Py_ssize_t)sizeof(needle) - 1 && memmem(s, (size_t)k, needle, sizeof(needle) - 1) != NULL)
        return 0;
    return 1;
}

/* the same for a BodySink made by Mcp that has taken nothing yet */
static int sink_ends_quietly(Call *c, PyObject *sink, const unsigned char *s, Py_ssize_t k) {
    Feeder *F = c->F;
    if (Py_TYPE(sink) != F->ktype)
        return 0;
    PyObject *buf = SLOT(sink, F->koff[K_BUF]), *owner = SLOT(sink, F->koff[K_OWNER]);
    if (buf == NULL || !PyBytes_CheckExact(buf) || PyBytes_GET_SIZE(buf) != 0 || owner == NULL ||
        SLOT(sink, F->koff[K_DONE]) != Py_False || SLOT(sink, F->koff[K_DECIDED]) != Py_False ||
        SLOT(sink, F->koff[K_TRUNC]) != Py_False)
        return 0;
    return body_is_quiet(c, owner, s, k);
}

/* BodyCapture._side_take(data, pos) with _side == 3: returns the end of the body bytes taken, -1 on error */
static Py_ssize_t side_take(Call *c, Py_ssize_t pos) {
    Feeder *F = c->F;
    PyObject *p = c->p;
    long long brem;
    if (!get_ll(p, F->poff[P_BREM], &brem)) {
        PyErr_SetString(PyExc_RuntimeError, "_h1feed: _brem is not an int");
        return -1;
    }
    Py_ssize_t k = (brem < c->n - pos) ? (Py_ssize_t)brem : c->n - pos;
    if (k > 0) {
        brem -= k;
        if (set_slot_ll(p, F->poff[P_BREM], brem) < 0)
            return -1;
        PyObject *sink = SLOT(p, F->poff[P_SINK]);
        if (sink != NULL && sink != Py_None) {
            if (brem == 0 && sink_ends_quietly(c, sink, c->buf + pos, k)) {
                /* add() would keep the chunk, finish(True) find no jsonrpc: done, and finish() not called (it would
                 * return at once): _release below sees no sink */
                set_slot(sink, F->koff[K_DONE], Py_True);
                set_slot(p, F->poff[P_SINK], Py_None);
            } else {
                PyObject *chunk = (pos == 0 && k == c->n) ? Py_NewRef(c->data)
                                  : PyBytes_FromStringAndSize((const char *)c->buf + pos, k);
                if (chunk == NULL)
                    return -1;
                Py_INCREF(sink);
                PyObject *r = PyObject_CallMethodOneArg(sink, F->s_add, chunk);
                Py_DECREF(sink);
                Py_DECREF(chunk);
                if (r == NULL)
                    return -1;
                int more = PyObject_IsTrue(r);
                Py_DECREF(r);
                if (more < 0)
                    return -1;
                if (!more && release(c, -1) < 0)
                    return -1;
            }
        }
    }
    if (brem == 0) {
        if (set_slot_ll(p, F->poff[P_SIDE], 0) < 0)
            return -1;
        set_slot(p, F->poff[P_BMODE], Py_None);
        PyObject *held = SLOT(p, F->poff[P_HELD]);
        if (held != NULL && held != Py_None && release(c, 1) < 0)
            return -1;
    }
    return pos + k;
}

/* lower-case ASCII search of w in the str u (ASCII) */
static int ascii_contains_ci(PyObject *u, const char *w) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(u), wn = (Py_ssize_t)strlen(w);
    const unsigned char *s = PyUnicode_1BYTE_DATA(u);
    for (Py_ssize_t i = 0; i + wn <= n; i++) {
        Py_ssize_t j = 0;
        while (j < wn && (unsigned char)(s[i + j] >= 'A' && s[i + j] <= 'Z' ? s[i + j] | 0x20 : s[i + j]) ==
                             (unsigned char)w[j])
            j++;
        if (j == wn)
            return 1;
    }
    return 0;
}

/* BodyCapture._want_body(msg, clen) for a fast head: 1 held (side capture set up), 0 not, 2 its body was in the
 * chunk and taken quietly (the message is out), -1 a Python error */
static int want_body(Call *c, PyObject *msg, h1_head *hd, int req, PyObject *method, Py_ssize_t h) {
    Feeder *F = c->F;
    PyObject *p = c->p, *hook = SLOT(p, F->poff[P_BODY]);
    if (!req) {
        int st = hd->status;
        if (st == 204 || st == 304 || str_is(method, F->s_head) || (str_is(method, F->s_connect) && st < 300))
            return 0;
    }
    PyObject *sink = NULL;
    long long cl = hd->clen;
    if (Py_TYPE(hook) == F->otype && (hd->ctype == NULL || hd->ctype_ascii) && hd->session == NULL &&
        hd->mversion == NULL) {
        /* hdrlog.mcp.Mcp.__call__ without an Mcp-* header */
        if (hd->ctype == NULL)
            return 0;
        int sse = ascii_contains_ci(hd->ctype, "text/event-stream");
        if (!sse && !ascii_contains_ci(hd->ctype, "json"))
            return 0;
        if (sse && str_is(method, F->s_get))
            return 0;
        long long cand;
        if (!get_ll(hook, F->ooff[O_CAND], &cand) || set_slot_ll(hook, F->ooff[O_CAND], cand + 1) < 0)
            return -1;
        if (cl <= 0 && (req || cl == 0))
            return 0;  /* no body: BodySink.finish(True) on nothing does nothing */
        if (cl > 0 && h + cl <= c->n && body_is_quiet(c, hook, c->buf + h, (Py_ssize_t)cl)) {
            /* the whole body is here and its sink would end quietly: the state _side_take leaves, the message out */
            set_slot(p, F->poff[P_BMODE], Py_None);
            if (set_slot_ll(p, F->poff[P_BREM], 0) < 0 || set_slot_ll(p, F->poff[P_SIDE], 0) < 0)
                return -1;
            set_slot(p, F->poff[P_CSTATE], F->s_size);
            set_slot(p, F->poff[P_CLINE], F->empty_bytes);
            if (PyList_Append(c->out, msg) < 0)
                return -1;
            if (!req)
                c->finals++;
            return 2;
        }
        PyObject *s = F->ktype->tp_alloc(F->ktype, 0);
        if (s == NULL)
            return -1;
        PyObject *vals[K_N] = {hook, msg, sse ? Py_True : Py_False, Py_None, Py_None, Py_False, F->empty_bytes,
                               Py_False, Py_False, Py_False};
        for (int k = 0; k < K_N; k++)
            SLOT(s, F->koff[k]) = Py_NewRef(vals[k]);
        sink = s;
    } else {
        PyObject *args[2] = {msg, method};
        Py_INCREF(hook);  /* the hook may replace parser._body */
        sink = PyObject_Vectorcall(hook, args, 2, NULL);
        Py_DECREF(hook);
        if (sink == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return -1;
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyObject *dbg = PyObject_GetAttr(p, F->s_debug);
            int d = dbg == NULL ? -1 : PyObject_IsTrue(dbg);
            Py_XDECREF(dbg);
            if (d > 0) {  /* debug: raise (as _want_body does) */
                PyErr_Restore(t, v, tb);
                return -1;
            }
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
            return d < 0 ? -1 : 0;  /* d < 0: reading debug failed, that error */
        }
        if (sink == Py_None) {
            Py_DECREF(sink);
            return 0;
        }
    }
    /* framing known: Content-Length cl (-1: none); a response without one is not taken (see feed) */
    if (cl <= 0) {
        PyObject *r = PyObject_CallMethodOneArg(sink, F->s_finish, Py_True);
        Py_DECREF(sink);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    Py_XSETREF(SLOT(p, F->poff[P_SINK]), sink);
    set_slot(p, F->poff[P_HELD], msg);
    set_slot(p, F->poff[P_BMODE], F->s_side);
    if (set_slot_ll(p, F->poff[P_BREM], cl) < 0)
        return -1;
    set_slot(p, F->poff[P_CSTATE], F->s_size);
    set_slot(p, F->poff[P_CLINE], F->empty_bytes);
    return 1;
}

/* Pairer.response_to(direction, skip) when rt is a Pairer's bound _response_to_in/_out (read, not called): a new
 * reference to the method (or None); NULL with no error set when rt is something else (then it is called) */
static PyObject *pairer_method(Feeder *F, PyObject *rt, long long skip) {
    if (!PyMethod_Check(rt))
        return NULL;
    PyObject *fn = PyMethod_GET_FUNCTION(rt), *pr = PyMethod_GET_SELF(rt);
    if (Py_TYPE(pr) != F->rtype || (fn != F->rt_in && fn != F->rt_out))
        return NULL;
    int src = fn == F->rt_in ? 1 : 0;  /* the requests of the other direction */
    PyObject *qs = SLOT(pr, F->roff[R_Q]), *stales = SLOT(pr, F->roff[R_STALE]);
    if (qs == NULL || !PyTuple_CheckExact(qs) || PyTuple_GET_SIZE(qs) != 2 || stales == NULL ||
        !PyList_CheckExact(stales) || PyList_GET_SIZE(stales) != 2)
        return NULL;
    PyObject *q = PyTuple_GET_ITEM(qs, src), *st = PyList_GET_ITEM(stales, src);
    if (!PyList_CheckExact(q) || !PyLong_CheckExact(st))
        return NULL;
    int overflow;
    long long stale = PyLong_AsLongLongAndOverflow(st, &overflow);
    if (overflow || stale < 0)
        return NULL;
    Py_ssize_t len = PyList_GET_SIZE(q);
    long long i = (len > stale ? stale : 0) + skip;
    if (i >= len)
        return Py_NewRef(Py_None);
    PyObject *req = PyList_GET_ITEM(q, (Py_ssize_t)i);
    if (Py_TYPE(req) != F->mtype)
        return NULL;
    PyObject *m = SLOT(req, F->moff[M_METHOD]);
    return m == NULL ? NULL : Py_NewRef(m);
}

/* the head's HttpMessage, made as object.__new__ and its __init__ would (slots filled in order) */
static PyObject *make_msg(Call *c, h1_head *hd, int req, PyObject *ts) {
    Feeder *F = c->F;
    PyObject *extra = PyDict_New();
    if (extra == NULL)
        return NULL;
    PyObject *msg = F->mtype->tp_alloc(F->mtype, 0);
    if (msg == NULL) {
        Py_DECREF(extra);
        return NULL;
    }
    PyObject *vals[M_N] = {req ? F->s_request : F->s_response, hd->minor ? F->s_11 : F->s_10, ts, hd->headers,
                           req ? hd->first : Py_None, req ? hd->second : Py_None,
                           req ? (hd->host ? hd->host : Py_None) : Py_None, req ? Py_None : hd->first,
                           req ? Py_None : hd->second, Py_False, Py_None, Py_None, Py_None, extra};
    for (int k = 0; k < M_N; k++)
        SLOT(msg, F->moff[k]) = Py_NewRef(vals[k]);
    Py_DECREF(extra);
    return msg;
}

/* a bytes search in buf[a:b] as bytes.find: offset or -1 */
static Py_ssize_t find(const unsigned char *buf, Py_ssize_t a, Py_ssize_t b, const char *w, Py_ssize_t wn) {
    if (a < 0)
        a = 0;
    if (b - a < wn)
        return -1;
    const unsigned char *r = memmem(buf + a, (size_t)(b - a), w, (size_t)wn);
    return r == NULL ? -1 : (Py_ssize_t)(r - buf);
}

/* a Python exception while the chunk was being taken: as Http1Parser.feed's except clause (debug: raise, else
 * _fail()) with _out the messages so far */
static PyObject *failed(Call *c) {
    Feeder *F = c->F;
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *dbg = PyObject_GetAttr(c->p, F->s_debug);
    int d = dbg == NULL ? -1 : PyObject_IsTrue(dbg);
    Py_XDECREF(dbg);
    if (d != 0) {
        if (d < 0) {  /* reading debug failed: that error */
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
        } else {
            PyErr_Restore(t, v, tb);
        }
        return NULL;
    }
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    set_slot(c->p, F->poff[P_OUT], c->out);
    PyObject *r = PyObject_CallMethodNoArgs(c->p, F->s_fail);
    set_slot(c->p, F->poff[P_OUT], F->no_out);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return Py_NewRef(c->out);
}

/* Feeder.feed(parser, data, ts_ns) -> list of messages, or None (nothing done: Http1Parser.feed's Python path) */
static PyObject *feed_impl(Feeder *F, PyObject *p, PyObject *data, PyObject *ts) {
    if (Py_TYPE(p) != F->ptype || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) == 0)
        Py_RETURN_NONE;
    PyObject *state = SLOT(p, F->poff[P_STATE]), *kind = SLOT(p, F->poff[P_KIND]);
    if (!str_is(state, F->s_http) || SLOT(p, F->poff[P_INMSG]) != Py_False)
        Py_RETURN_NONE;
    /* the switches (tests turn them off) */
    PyObject *flag = PyObject_GetAttr((PyObject *)F->ptype, F->s_fast);
    int on = flag == NULL ? -1 : PyObject_IsTrue(flag);
    Py_XDECREF(flag);
    if (on > 0) {
        flag = PyObject_GetAttr((PyObject *)F->ptype, F->s_cfeed);
        on = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    if (on < 0)
        return NULL;
    if (!on)
        Py_RETURN_NONE;
    int req;
    if (str_is(kind, F->s_request))
        req = 1;
    else if (str_is(kind, F->s_response))
        req = 0;
    else
        Py_RETURN_NONE;
    long long fskip, side;
    if (!get_ll(p, F->poff[P_FSKIP], &fskip) || !get_ll(p, F->poff[P_SIDE], &side))
        Py_RETURN_NONE;
    Call c = {F, p, data, NULL, (const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0};
    Py_ssize_t n = c.n;

    if (fskip > 0) {  /* FastHeads._fast_body: the body of a message the fast path took goes on */
        if (side == 0) {
            if (fskip < n)
                Py_RETURN_NONE;
            if (set_slot_ll(p, F->poff[P_FSKIP], fskip - n) < 0)
                return NULL;
            return PyList_New(0);
        }
        long long brem;
        if (side != 3 || !get_ll(p, F->poff[P_BREM], &brem) || brem < n)
            Py_RETURN_NONE;
        c.out = PyList_New(0);
        if (c.out == NULL)
            return NULL;
        if (side_take(&c, 0) < 0)
            goto error;
        if (!get_ll(p, F->poff[P_SIDE], &side) || !get_ll(p, F->poff[P_BREM], &brem)) {
            PyErr_SetString(PyExc_RuntimeError, "_h1feed: _side or _brem is not an int");
            goto error;
        }
        if (set_slot_ll(p, F->poff[P_FSKIP], side ? brem : 0) < 0)
            goto error;
        return c.out;
    }
    if (side != 0 || SLOT(p, F->poff[P_HELD]) != Py_None)
        Py_RETURN_NONE;

    h1_head hd;
    int rc = F->api->parse_into(c.buf, n, 0, req, F->max_head, &hd);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    Py_ssize_t h = hd.end;
    PyObject *msg = NULL, *method = NULL;
    /* FastHeads._fast with end -1: a segment boundary inside the head leaves it to llhttp */
    Py_ssize_t inside;
    if (req)
        inside = find(c.buf, find(c.buf, 0, h, " HTTP/1.", 8) + 1, h, " HTTP/1.", 8);
    else
        inside = find(c.buf, 1, h, "HTTP/1.", 7);
    /* and a message ending before the chunk's end (more in the chunk: segments) is left to Python, as are
     * responses without a Content-Length (a body until close) */
    int take;
    if (req)
        take = h + (hd.clen > 0 ? hd.clen : 0) >= n;
    else if (hd.status == 204 || hd.status == 304)
        take = h == n;
    else
        take = hd.clen >= 0 && h + hd.clen >= n;
    if (inside >= 0 || !take) {
        Py_DECREF(hd.first);
        Py_DECREF(hd.second);
        Py_DECREF(hd.headers);
        Py_RETURN_NONE;
    }
    c.out = PyList_New(0);
    if (c.out == NULL)
        goto head_error;
    msg = make_msg(&c, &hd, req, ts);
    if (msg == NULL)
        goto head_error;
    PyObject *after;
    if (req) {
        method = Py_NewRef(Py_None);
        after = F->after[hd.minor ? 1 : 0];
    } else {
        /* as on_message_begin: response_to(finals) or response_to(), an exception meaning None */
        PyObject *rt = SLOT(p, F->poff[P_RT]), *rts = SLOT(p, F->poff[P_RTSKIP]);
        int skip = rts == NULL ? 0 : PyObject_IsTrue(rts);
        if (rt == NULL)
            PyErr_SetString(PyExc_AttributeError, "_response_to");
        if (skip < 0 || rt == NULL)
            goto head_error;
        if (skip && (method = pairer_method(F, rt, 0)) != NULL) {
            /* read from the Pairer */
        } else if (skip) {
            PyObject *z = PyLong_FromLong(0);
            if (z == NULL)
                goto head_error;
            Py_INCREF(rt);
            method = PyObject_CallOneArg(rt, z);
            Py_DECREF(rt);
            Py_DECREF(z);
        } else {
            Py_INCREF(rt);
            method = PyObject_CallNoArgs(rt);
            Py_DECREF(rt);
        }
        if (method == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto head_error;
            PyErr_Clear();
            method = Py_NewRef(Py_None);
        }
        set_slot(p, F->poff[P_METHOD], method);
        after = F->after[2];
    }
    PyObject *hook = SLOT(p, F->poff[P_BODY]);
    if (hook != NULL && hook != Py_None) {
        int w = want_body(&c, msg, &hd, req, method, h);
        if (w < 0)
            goto py_error;
        if (w == 2) {
            set_slot(p, F->poff[P_P], after);
            goto done;
        }
        if (w == 1) {  /* held: as _side_run, the body from the end of the head */
            if (set_slot_ll(p, F->poff[P_SIDE], 3) < 0 || side_take(&c, h) < 0)
                goto py_error;
            set_slot(p, F->poff[P_P], after);
            long long s3, brem;
            if (!get_ll(p, F->poff[P_SIDE], &s3) || !get_ll(p, F->poff[P_BREM], &brem)) {
                PyErr_SetString(PyExc_RuntimeError, "_h1feed: _side or _brem is not an int");
                goto py_error;
            }
            if (s3 && set_slot_ll(p, F->poff[P_FSKIP], brem) < 0)
                goto py_error;
            goto done;  /* the body reaches the chunk's end (take) */
        }
    }
    if (PyList_Append(c.out, msg) < 0)
        goto py_error;
    long long blen;
    if (req) {
        blen = hd.clen > 0 ? hd.clen : 0;
    } else {
        c.finals++;  /* status >= 200: final */
        if (str_is(method, F->s_head)) {  /* the stop after a HEAD response's head */
            set_slot(p, F->poff[P_P], Py_None);
            if (h >= n)
                goto done;
            /* the rest of the chunk: Http1Parser's loop from the end of the head */
            PyObject *nxt = Py_BuildValue("(On)", data, h);
            if (nxt == NULL)
                goto py_error;
            PyObject *fin = PyLong_FromLongLong(c.finals);
            if (fin == NULL) {
                Py_DECREF(nxt);
                goto py_error;
            }
            PyObject *rargs[6] = {p, c.out, data, ts, fin, nxt};
            PyObject *r = PyObject_VectorcallMethod(F->s_resume, rargs, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(fin);
            Py_DECREF(nxt);
            Py_DECREF(msg);
            Py_DECREF(method);
            Py_DECREF(hd.first);
            Py_DECREF(hd.second);
            Py_DECREF(hd.headers);
            Py_DECREF(c.out);
            return r;
        }
        if (str_is(method, F->s_connect) && hd.status < 300) {
            set_slot(p, F->poff[P_P], Py_None);
            set_slot(p, F->poff[P_STATE], F->s_tunnel);
            set_slot(p, F->poff[P_TENT], Py_False);
            goto done;
        }
        blen = (hd.status == 204 || hd.status == 304) ? 0 : hd.clen;
    }
    set_slot(p, F->poff[P_P], after);
    if (set_slot_ll(p, F->poff[P_FSKIP], h + blen - n) < 0)  /* >= 0: take */
        goto py_error;
done:
    Py_DECREF(msg);
    Py_DECREF(method);
    Py_DECREF(hd.first);
    Py_DECREF(hd.second);
    Py_DECREF(hd.headers);
    return c.out;
py_error: {
        PyObject *r = failed(&c);
        Py_XDECREF(msg);
        Py_XDECREF(method);
        Py_DECREF(hd.first);
        Py_DECREF(hd.second);
        Py_DECREF(hd.headers);
        Py_DECREF(c.out);
        return r;
    }
head_error:
    Py_XDECREF(msg);
    Py_XDECREF(method);
    Py_DECREF(hd.first);
    Py_DECREF(hd.second);
    Py_DECREF(hd.headers);
    Py_XDECREF(c.out);
    return NULL;
error: {
        PyObject *r = failed(&c);
        Py_DECREF(c.out);
        return r;
    }
}

static PyObject *feeder_feed(Feeder *F, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "feed(parser, data, ts_ns) takes 3 arguments");
        return NULL;
    }
    return feed_impl(F, args[0], args[1], args[2]);
}

static PyMethodDef feeder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))feeder_feed, METH_FASTCALL,
     "feed(parser, data, ts_ns) -> the messages Http1Parser.feed would return, or None (not taken: nothing done)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeederType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Feeder",
    .tp_basicsize = sizeof(Feeder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Feeder(api, Http1Parser, HttpMessage, Mcp, BodySink, AFTER, NO_OUT, MAX_HEAD, SNIFF_BYTES)",
    .tp_new = feeder_new,
    .tp_dealloc = (destructor)feeder_dealloc,
    .tp_traverse = (traverseproc)feeder_traverse,
    .tp_methods = feeder_methods,
};

/* ------------------------------------------------------------------------------------------ delivering */

/* Deliverer(Conn, Pairer, HttpMessage, link, one).deliver(conn, direction, msgs, ev, emit): Tracker.on_event's loop
 * over an HTTP/1 connection's messages, for each: Pairer.on_message (its common cases here: a request queued, a final
 * response paired with the oldest request, no stale requests, a latency in whole microseconds not on a tie; anything
 * else calls Pairer.on_message), mcp.link when the response's request carries MCP, conn.messages += 1, then
 * emit(conn, direction, msg, ev). A message that is not an HttpMessage, or a connection that is not a Conn with a
 * Pairer, goes through one(conn, direction, msg, ev, emit) (the same in Python). */
enum { C_PAIRER, C_MESSAGES, C_N };
static const char *const c_names[C_N] = {"pairer", "messages"};
enum { Q_Q, Q_STALE, Q_ROLE, Q_UNPAIRED, Q_MAX, Q_N };
static const char *const q_names[Q_N] = {"_q", "_stale", "role", "unpaired", "max_pending"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *ctype, *qtype, *mtype;
    PyObject *link, *one;
    Py_ssize_t coff[C_N], qoff[Q_N], moff[M_N];
    PyObject *s_in, *s_out, *s_request, *s_response, *s_h2, *s_server, *s_client, *s_mcp, *s_on_message;
} Deliverer;

static void deliverer_dealloc(Deliverer *D) {
    PyObject_GC_UnTrack(D);
    Py_CLEAR(D->ctype);
    Py_CLEAR(D->qtype);
    Py_CLEAR(D->mtype);
    Py_CLEAR(D->link);
    Py_CLEAR(D->one);
    PyObject **strs[] = {&D->s_in, &D->s_out, &D->s_request, &D->s_response, &D->s_h2, &D->s_server, &D->s_client,
                         &D->s_mcp, &D->s_on_message};
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
        Py_CLEAR(*strs[k]);
    Py_TYPE(D)->tp_free((PyObject *)D);
}

static int deliverer_traverse(Deliverer *D, visitproc visit, void *arg) {
    Py_VISIT(D->ctype);
    Py_VISIT(D->qtype);
    Py_VISIT(D->mtype);
    Py_VISIT(D->link);
    Py_VISIT(D->one);
    return 0;
}

static PyObject *deliverer_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    PyObject *ct, *qt, *mt, *link, *one;
    if (!PyArg_ParseTuple(args, "OOOOO", &ct, &qt, &mt, &link, &one))
        return NULL;
    Deliverer *D = (Deliverer *)tp->tp_alloc(tp, 0);
    if (D == NULL)
        return NULL;
    D->ctype = (PyTypeObject *)Py_NewRef(ct);
    D->qtype = (PyTypeObject *)Py_NewRef(qt);
    D->mtype = (PyTypeObject *)Py_NewRef(mt);
    D->link = Py_NewRef(link);
    D->one = Py_NewRef(one);
    if (!find_slots(D->ctype, c_names, C_N, D->coff) || !find_slots(D->qtype, q_names, Q_N, D->qoff) ||
        !find_slots(D->mtype, m_names, M_N, D->moff)) {
        PyErr_SetString(PyExc_TypeError, "Deliverer: a type's fields are not the object slots expected");
        Py_DECREF(D);
        return NULL;
    }
    struct { PyObject **dst; const char *s; } strs[] = {
        {&D->s_in, "in"}, {&D->s_out, "out"}, {&D->s_request, "request"}, {&D->s_response, "response"},
        {&D->s_h2, "h2"}, {&D->s_server, "server"}, {&D->s_client, "client"}, {&D->s_mcp, "mcp"},
        {&D->s_on_message, "on_message"},
    };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        *strs[k].dst = PyUnicode_InternFromString(strs[k].s);
        if (*strs[k].dst == NULL) {
            Py_DECREF(D);
            return NULL;
        }
    }
    return (PyObject *)D;
}

static int small_int(PyObject *o, long long *v) {  /* an exact int that fits a long long */
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    return !overflow && !(*v == -1 && PyErr_Occurred());
}

/* Pairer.on_message(msg, direction)'s common cases; 1 done, 0 not (nothing changed: call it), -1 error */
static int pair(Deliverer *D, PyObject *pr, PyObject *msg, int d) {
    PyObject *qs = SLOT(pr, D->qoff[Q_Q]), *stales = SLOT(pr, D->qoff[Q_STALE]), *role = SLOT(pr, D->qoff[Q_ROLE]);
    if (qs == NULL || !PyTuple_CheckExact(qs) || PyTuple_GET_SIZE(qs) != 2 || stales == NULL ||
        !PyList_CheckExact(stales) || PyList_GET_SIZE(stales) != 2 || role == NULL)
        return 0;
    PyObject *kind = SLOT(msg, D->moff[M_KIND]);
    if (str_is(kind, D->s_request)) {
        PyObject *q = PyTuple_GET_ITEM(qs, d);
        long long maxp;
        if (!PyList_CheckExact(q) || !small_int(SLOT(pr, D->qoff[Q_MAX]), &maxp) || PyList_GET_SIZE(q) >= maxp)
            return 0;
        if (PyList_Append(q, msg) < 0)
            return -1;
        if (role == Py_None)
            set_slot(pr, D->qoff[Q_ROLE], d == 0 ? D->s_server : D->s_client);
        return 1;
    }
    if (!str_is(kind, D->s_response))
        return 0;
    PyObject *q = PyTuple_GET_ITEM(qs, 1 - d);
    long long stale, status, t1, t0;
    if (!PyList_CheckExact(q) || !small_int(PyList_GET_ITEM(stales, 1 - d), &stale) || stale != 0)
        return 0;
    if (PyList_GET_SIZE(q) == 0) {
        long long unp;
        if (!small_int(SLOT(pr, D->qoff[Q_UNPAIRED]), &unp))
            return 0;
        if (role == Py_None)
            set_slot(pr, D->qoff[Q_ROLE], d == 1 ? D->s_server : D->s_client);
        return set_slot_ll(pr, D->qoff[Q_UNPAIRED], unp + 1) < 0 ? -1 : 1;
    }
    PyObject *st = SLOT(msg, D->moff[M_STATUS]);
    if (st != Py_None && (!small_int(st, &status) || (status >= 100 && status < 200 && status != 101)))
        return 0;  /* an interim response pairs without taking its request */
    PyObject *req = PyList_GET_ITEM(q, 0);
    if (Py_TYPE(req) != D->mtype || !small_int(SLOT(msg, D->moff[M_TS]), &t1) ||
        !small_int(SLOT(req, D->moff[M_TS]), &t0))
        return 0;
    if (t1 < t0 || t1 - t0 >= (1LL << 40) || (t1 - t0) % 1000 == 500)
        return 0;  /* round() decides */
    long long dt = t1 - t0, us = dt / 1000, ns = dt % 1000;
    PyObject *lat = PyFloat_FromDouble((double)(us + (ns > 500)) / 1000.0);
    if (lat == NULL)
        return -1;
    if (role == Py_None)
        set_slot(pr, D->qoff[Q_ROLE], d == 1 ? D->s_server : D->s_client);
    Py_INCREF(req);
    if (PyList_SetSlice(q, 0, 1, NULL) < 0) {
        Py_DECREF(req);
        Py_DECREF(lat);
        return -1;
    }
    Py_XSETREF(SLOT(msg, D->moff[M_REQ]), req);
    Py_XSETREF(SLOT(msg, D->moff[M_LAT]), lat);
    return 1;
}

static PyObject *deliver_impl(Deliverer *D, PyObject *conn, PyObject *dir, PyObject *msgs, PyObject *ev,
                              PyObject *emit) {
    if (!PyList_CheckExact(msgs)) {
        PyErr_SetString(PyExc_TypeError, "deliver: msgs must be a list");
        return NULL;
    }
    int d = str_is(dir, D->s_in) ? 0 : str_is(dir, D->s_out) ? 1 : -1;
    PyObject *pr = Py_TYPE(conn) == D->ctype ? SLOT(conn, D->coff[C_PAIRER]) : NULL;
    int fast = d >= 0 && pr != NULL && Py_TYPE(pr) == D->qtype;
    PyObject *res = NULL;
    Py_XINCREF(pr);  /* the Pairer of this loop, whatever emit or on_message do to conn.pairer (as Python binds it) */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(msgs); i++) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(msgs, i)), *r;
        long long count;
        if (!fast || Py_TYPE(m) != D->mtype || !small_int(SLOT(conn, D->coff[C_MESSAGES]), &count)) {
            PyObject *a[5] = {conn, dir, m, ev, emit};
            r = PyObject_Vectorcall(D->one, a, 5, NULL);
            Py_DECREF(m);
            if (r == NULL)
                goto out;
            Py_DECREF(r);
            continue;
        }
        if (!str_is(SLOT(m, D->moff[M_PROTO]), D->s_h2)) {
            int rc = pair(D, pr, m, d);
            if (rc < 0)
                goto error;
            if (rc == 0) {
                PyObject *a[3] = {pr, m, dir};
                r = PyObject_VectorcallMethod(D->s_on_message, a, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                if (r == NULL)
                    goto error;
                Py_SETREF(m, r);
                if (Py_TYPE(m) != D->mtype) {  /* not expected: the rest in Python */
                    PyErr_SetString(PyExc_TypeError, "deliver: Pairer.on_message returned something else");
                    goto error;
                }
            }
        }
        PyObject *extra = SLOT(m, D->moff[M_EXTRA]), *req = SLOT(m, D->moff[M_REQ]);
        if (extra != NULL && req != NULL && req != Py_None && PyObject_IsTrue(extra) > 0) {
            int has = PySequence_Contains(extra, D->s_mcp);
            if (has < 0)
                goto error;
            if (has) {
                r = PyObject_CallOneArg(D->link, m);
                if (r == NULL)
                    goto error;
                Py_DECREF(r);
            }
        }
        if (PyErr_Occurred())
            goto error;
        if (!small_int(SLOT(conn, D->coff[C_MESSAGES]), &count) ||
            set_slot_ll(conn, D->coff[C_MESSAGES], count + 1) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "deliver: Conn.messages is not an int");
            goto error;
        }
        PyObject *a[4] = {conn, dir, m, ev};
        r = PyObject_Vectorcall(emit, a, 4, NULL);
        Py_DECREF(m);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
        continue;
    error:
        Py_DECREF(m);
        goto out;
    }
    res = Py_NewRef(Py_None);
out:
    Py_XDECREF(pr);
    return res;
}

static PyObject *deliverer_deliver(Deliverer *D, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "deliver(conn, direction, msgs, ev, emit) takes 5 arguments");
        return NULL;
    }
    return deliver_impl(D, args[0], args[1], args[2], args[3], args[4]);
}

static PyMethodDef deliverer_methods[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliverer_deliver, METH_FASTCALL,
     "deliver(conn, direction, msgs, ev, emit): pair, link, count and emit each message (Tracker.on_event's loop)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DelivererType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Deliverer",
    .tp_basicsize = sizeof(Deliverer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Deliverer(Conn, Pairer, HttpMessage, link, one)",
    .tp_new = deliverer_new,
    .tp_dealloc = (destructor)deliverer_dealloc,
    .tp_traverse = (traverseproc)deliverer_traverse,
    .tp_methods = deliverer_methods,
};

/* ------------------------------------------------------------------------------------------ tracking */

/* Track(Event, Conn, on_event, feeder, deliverer).bind(tracker) -> a callable that is tracker.on_event for a data
 * event of a known connection (hdrlog.conntrack.Tracker.on_event's first part, then the C feed and the Deliverer):
 * anything else (another kind, a new connection, an event or connection of another type) is passed to the Python
 * on_event(tracker, ev) untouched; the parts of a data event that are not the common case call the Tracker's own
 * methods (_lost, _on_data when the C feed declines, _run and release_held for a held request, _truncated). It
 * holds the tracker weakly (no reference cycle through the tracker's __dict__). */
enum { E_TS, E_CONN, E_PID, E_LENGTH, E_OFFSET, E_LOST, E_KIND, E_DIR, E_ATTR, E_LOCAL, E_PEER, E_FD, E_DATA, E_N };
static const char *const e_names[E_N] = {"ts_ns", "conn", "pid", "length", "offset", "lost", "kind", "dir", "attr",
                                         "local", "peer", "fd", "data"};
enum { T_PAIRER, T_PARSERS, T_H2, T_LAST, T_PEER, T_LOCAL, T_ATTR, T_N };
static const char *const t_names[T_N] = {"pairer", "parsers", "h2", "last_ns", "peer", "local", "attr"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *etype, *ctype;
    Py_ssize_t eoff[E_N], toff[T_N];
    PyObject *on_event, *feeder, *deliverer;
    PyObject *s_conns, *s_counts, *s_events, *s_fds, *s_on_event, *s_learn, *s_lost, *s_on_data, *s_run,
        *s_release_held, *s_truncated, *s_emit, *s_held, *one;
} Track;

typedef struct {
    PyObject_HEAD
    Track *T;
    PyObject *wr;  /* weak reference to the tracker */
    vectorcallfunc vectorcall;
} Bound;

static void track_dealloc(Track *T) {
    PyObject_GC_UnTrack(T);
    Py_CLEAR(T->etype);
    Py_CLEAR(T->ctype);
    Py_CLEAR(T->on_event);
    Py_CLEAR(T->feeder);
    Py_CLEAR(T->deliverer);
    PyObject **strs[] = {&T->s_conns, &T->s_counts, &T->s_events, &T->s_fds, &T->s_on_event, &T->s_learn, &T->s_lost,
                         &T->s_on_data, &T->s_run, &T->s_release_held, &T->s_truncated, &T->s_emit, &T->s_held,
                         &T->one};
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
        Py_CLEAR(*strs[k]);
    Py_TYPE(T)->tp_free((PyObject *)T);
}

static int track_traverse(Track *T, visitproc visit, void *arg) {
    Py_VISIT(T->etype);
    Py_VISIT(T->ctype);
    Py_VISIT(T->on_event);
    Py_VISIT(T->feeder);
    Py_VISIT(T->deliverer);
    return 0;
}

static PyTypeObject FeederType, DelivererType, BoundType;

static PyObject *track_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    PyObject *et, *ct, *on_event, *feeder, *deliverer;
    if (!PyArg_ParseTuple(args, "OOOO!O!", &et, &ct, &on_event, &FeederType, &feeder, &DelivererType, &deliverer))
        return NULL;
    Track *T = (Track *)tp->tp_alloc(tp, 0);
    if (T == NULL)
        return NULL;
    T->etype = (PyTypeObject *)Py_NewRef(et);
    T->ctype = (PyTypeObject *)Py_NewRef(ct);
    T->on_event = Py_NewRef(on_event);
    T->feeder = Py_NewRef(feeder);
    T->deliverer = Py_NewRef(deliverer);
    if (!find_slots(T->etype, e_names, E_N, T->eoff) || !find_slots(T->ctype, t_names, T_N, T->toff) ||
        ((Deliverer *)deliverer)->ctype != T->ctype) {
        PyErr_SetString(PyExc_TypeError, "Track: a type's fields are not the object slots expected");
        Py_DECREF(T);
        return NULL;
    }
    struct { PyObject **dst; const char *s; } strs[] = {
        {&T->s_conns, "conns"}, {&T->s_counts, "counts"}, {&T->s_events, "events"}, {&T->s_fds, "fds"},
        {&T->s_on_event, "on_event"}, {&T->s_learn, "learn"}, {&T->s_lost, "_lost"}, {&T->s_on_data, "_on_data"},
        {&T->s_run, "_run"}, {&T->s_release_held, "release_held"}, {&T->s_truncated, "_truncated"},
        {&T->s_emit, "emit"}, {&T->s_held, "_held"},
    };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        *strs[k].dst = PyUnicode_InternFromString(strs[k].s);
        if (*strs[k].dst == NULL) {
            Py_DECREF(T);
            return NULL;
        }
    }
    T->one = PyLong_FromLong(1);
    if (T->one == NULL) {
        Py_DECREF(T);
        return NULL;
    }
    return (PyObject *)T;
}

static PyObject *bound_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *track_bind(Track *T, PyObject *tracker) {
    Bound *b = PyObject_GC_New(Bound, &BoundType);
    if (b == NULL)
        return NULL;
    b->T = (Track *)Py_NewRef(T);
    b->wr = PyWeakref_NewRef(tracker, NULL);
    b->vectorcall = bound_vectorcall;
    if (b->wr == NULL) {
        Py_DECREF(b->T);
        b->T = NULL;
        Py_DECREF(b);
        return NULL;
    }
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

static void bound_dealloc(Bound *b) {
    PyObject_GC_UnTrack(b);
    Py_CLEAR(b->T);
    Py_CLEAR(b->wr);
    PyObject_GC_Del(b);
}

static int bound_traverse(Bound *b, visitproc visit, void *arg) {
    Py_VISIT(b->T);
    Py_VISIT(b->wr);
    return 0;
}

/* the methods the common case leaves to Python: tracker.NAME(args...) */
static int call_method(PyObject *tracker, PyObject *name, PyObject **a, size_t n) {
    PyObject *buf[6];
    buf[0] = tracker;
    for (size_t k = 0; k < n; k++)
        buf[k + 1] = a[k];
    PyObject *r = PyObject_VectorcallMethod(name, buf, (n + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Tracker.on_event(ev) for a data event of a known connection; the rest to the Python on_event */
static PyObject *track_event(Track *T, PyObject *tracker, PyObject *ev) {
    long long kind, dir;
    if (Py_TYPE(ev) != T->etype || !small_int(SLOT(ev, T->eoff[E_KIND]), &kind) || kind != 1 ||
        !small_int(SLOT(ev, T->eoff[E_DIR]), &dir))
        goto python;  /* not a data event (or an odd one) */
    for (int k = 0; k < E_N; k++)
        if (SLOT(ev, T->eoff[k]) == NULL)
            goto python;  /* a field never set: Python says which */
    PyObject *conns = PyObject_GetAttr(tracker, T->s_conns);
    if (conns == NULL)
        return NULL;
    PyObject *key = PyTuple_Pack(2, SLOT(ev, T->eoff[E_PID]), SLOT(ev, T->eoff[E_CONN]));
    if (key == NULL) {
        Py_DECREF(conns);
        return NULL;
    }
    PyObject *c = PyDict_CheckExact(conns) ? PyDict_GetItemWithError(conns, key) : NULL;
    Py_DECREF(key);
    Py_DECREF(conns);  /* c: borrowed from the tracker's dict, which keeps it until this event closes it (it cannot) */
    if (c == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto python;  /* a new connection: Tracker._conn */
    }
    if (Py_TYPE(c) != T->ctype)
        goto python;
    for (int k = 0; k < T_N; k++)
        if (SLOT(c, T->toff[k]) == NULL)
            goto python;
    Py_INCREF(c);
    PyObject *counts = PyObject_GetAttr(tracker, T->s_counts), *res = NULL, *msgs = NULL, *emit = NULL;
    if (counts == NULL)
        goto done;
    {   /* self.counts["events"] += 1 */
        PyObject *v = PyObject_GetItem(counts, T->s_events), *nv;
        nv = v == NULL ? NULL : PyNumber_Add(v, T->one);
        Py_XDECREF(v);
        int rc = nv == NULL ? -1 : PyObject_SetItem(counts, T->s_events, nv);
        Py_XDECREF(nv);
        Py_DECREF(counts);
        if (rc < 0)
            goto done;
    }
    long long fd;
    if (!small_int(SLOT(ev, T->eoff[E_FD]), &fd) || fd >= 0) {  /* Go's events: FdSockets fills the tuple */
        PyObject *fds = PyObject_GetAttr(tracker, T->s_fds);
        if (fds == NULL)
            goto done;
        PyObject *r = PyObject_CallMethodOneArg(fds, T->s_on_event, ev);
        Py_DECREF(fds);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    set_slot(c, T->toff[T_LAST], SLOT(ev, T->eoff[E_TS]));
    PyObject *peer = SLOT(ev, T->eoff[E_PEER]);
    if (peer != Py_None) {
        int learn = peer != SLOT(c, T->toff[T_PEER]) || SLOT(ev, T->eoff[E_LOCAL]) != SLOT(c, T->toff[T_LOCAL]);
        if (!learn) {
            learn = PyObject_RichCompareBool(SLOT(ev, T->eoff[E_ATTR]), SLOT(c, T->toff[T_ATTR]), Py_NE);
            if (learn < 0)
                goto done;
        }
        if (learn) {
            PyObject *r = PyObject_CallMethodOneArg(c, T->s_learn, ev);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    Deliverer *D = (Deliverer *)T->deliverer;
    PyObject *direction, *other;
    if (dir == 1 || dir == 2) {
        direction = dir == 1 ? D->s_in : D->s_out;
        other = dir == 1 ? D->s_out : D->s_in;
    } else {  /* DIRECTION.get(ev.dir) is None */
        res = Py_NewRef(Py_None);
        goto done;
    }
    int lost = PyObject_IsTrue(SLOT(ev, T->eoff[E_LOST]));
    if (lost < 0)
        goto done;
    if (lost) {
        PyObject *a[2] = {c, ev};
        if (call_method(tracker, T->s_lost, a, 2) < 0)
            goto done;
    }
    PyObject *data = SLOT(ev, T->eoff[E_DATA]), *parsers = SLOT(c, T->toff[T_PARSERS]);
    PyObject *p = NULL;
    if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0 && SLOT(c, T->toff[T_H2]) == Py_None &&
        parsers != NULL && PyDict_CheckExact(parsers)) {
        p = PyDict_GetItemWithError(parsers, direction);
        if (p == NULL && PyErr_Occurred())
            goto done;
    }
    if (p != NULL && Py_TYPE(p) == ((Feeder *)T->feeder)->ptype) {
        Py_INCREF(p);
        msgs = feed_impl((Feeder *)T->feeder, p, data, SLOT(ev, T->eoff[E_TS]));
        Py_DECREF(p);
        if (msgs == NULL)
            goto done;
        if (msgs == Py_None)
            Py_CLEAR(msgs);
    }
    if (msgs == NULL) {  /* the rest of on_event in Python (the C feed declined, or was not for this chunk) */
        PyObject *a[4] = {c, direction, ev, p != NULL ? Py_True : Py_False};
        if (call_method(tracker, T->s_on_data, a, 4) < 0)
            goto done;
        res = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t nm = PyList_GET_SIZE(msgs);
    if (nm > 0) {
        /* a final response while the other direction holds a request for its body: that request goes first */
        PyObject *op = PyDict_GetItemWithError(parsers, other);
        if (op == NULL && PyErr_Occurred())
            goto done;
        if (op != NULL) {
            PyObject *held = Py_TYPE(op) == ((Feeder *)T->feeder)->ptype
                                 ? Py_NewRef(SLOT(op, ((Feeder *)T->feeder)->poff[P_HELD]))
                                 : PyObject_GetAttr(op, T->s_held);
            if (held == NULL)
                goto done;
            int is_held = held != Py_None;
            Py_DECREF(held);
            int final = 0;
            for (Py_ssize_t i = 0; is_held && !final && i < nm; i++) {
                PyObject *m = PyList_GET_ITEM(msgs, i);
                long long st;
                PyObject *sto = SLOT(m, D->moff[M_STATUS]);
                final = Py_TYPE(m) == D->mtype && str_is(SLOT(m, D->moff[M_KIND]), D->s_response) &&
                        (sto == Py_None ? 0 : small_int(sto, &st) ? st >= 200 : -1);
                if (final < 0) {
                    PyErr_SetString(PyExc_TypeError, "on_event: a status that is not an int");
                    goto done;
                }
            }
            if (final) {
                Py_INCREF(op);
                PyObject *rel = PyObject_CallMethodNoArgs(op, T->s_release_held);
                Py_DECREF(op);
                if (rel == NULL)
                    goto done;
                PyObject *a[4] = {c, other, rel, ev};
                int rc = call_method(tracker, T->s_run, a, 4);
                Py_DECREF(rel);
                if (rc < 0)
                    goto done;
            }
        }
        emit = PyObject_GetAttr(tracker, T->s_emit);
        if (emit == NULL)
            goto done;
        PyObject *r = deliver_impl(D, c, direction, msgs, ev, emit);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    {   /* the call moved more than was captured */
        long long off, len;
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        int trunc;
        if (small_int(SLOT(ev, T->eoff[E_OFFSET]), &off) && small_int(SLOT(ev, T->eoff[E_LENGTH]), &len) &&
            off < (1LL << 62) && off >= -(1LL << 62)) {
            trunc = off + n < len;
        } else {  /* ev.offset + n < ev.length in Python's arithmetic */
            PyObject *nn = PyLong_FromSsize_t(n), *end = nn == NULL ? NULL
                                                                     : PyNumber_Add(SLOT(ev, T->eoff[E_OFFSET]), nn);
            Py_XDECREF(nn);
            trunc = end == NULL ? -1 : PyObject_RichCompareBool(end, SLOT(ev, T->eoff[E_LENGTH]), Py_LT);
            Py_XDECREF(end);
            if (trunc < 0)
                goto done;
        }
        if (trunc) {
            PyObject *nn = PyLong_FromSsize_t(n);
            if (nn == NULL)
                goto done;
            PyObject *a[4] = {c, direction, ev, nn};
            int rc = call_method(tracker, T->s_truncated, a, 4);
            Py_DECREF(nn);
            if (rc < 0)
                goto done;
        }
    }
    res = Py_NewRef(Py_None);
done:
    Py_XDECREF(msgs);
    Py_XDECREF(emit);
    Py_DECREF(c);
    return res;
python: {
        PyObject *a[2] = {tracker, ev};
        return PyObject_Vectorcall(T->on_event, a, 2, NULL);
    }
}

static PyObject *bound_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Bound *b = (Bound *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "on_event(ev) takes 1 argument");
        return NULL;
    }
    PyObject *tracker = PyWeakref_GetObject(b->wr);
    if (tracker == NULL)
        return NULL;
    if (tracker == Py_None) {
        PyErr_SetString(PyExc_ReferenceError, "the Tracker is gone");
        return NULL;
    }
    Py_INCREF(tracker);
    PyObject *r = track_event(b->T, tracker, args[0]);
    Py_DECREF(tracker);
    return r;
}

static PyMethodDef track_methods[] = {
    {"bind", (PyCFunction)track_bind, METH_O, "bind(tracker) -> tracker.on_event in C (see the module source)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TrackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Track",
    .tp_basicsize = sizeof(Track),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Track(Event, Conn, Tracker.on_event, Feeder, Deliverer)",
    .tp_new = track_new,
    .tp_dealloc = (destructor)track_dealloc,
    .tp_traverse = (traverseproc)track_traverse,
    .tp_methods = track_methods,
};

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.TrackedOnEvent",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "a Tracker's on_event in C (Track.bind)",
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_vectorcall_offset = offsetof(Bound, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h1feed", "C fast path of HTTP/1 connection feeding (hdrlog.http1.Http1Parser.feed).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h1feed(void) {
    if (PyType_Ready(&FeederType) < 0 || PyType_Ready(&DelivererType) < 0 || PyType_Ready(&TrackType) < 0 ||
        PyType_Ready(&BoundType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FeederType);
    if (PyModule_AddObject(m, "Feeder", (PyObject *)&FeederType) < 0) {
        Py_DECREF(&FeederType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DelivererType);
    if (PyModule_AddObject(m, "Deliverer", (PyObject *)&DelivererType) < 0) {
        Py_DECREF(&DelivererType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TrackType);
    if (PyModule_AddObject(m, "Track", (PyObject *)&TrackType) < 0) {
        Py_DECREF(&TrackType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
