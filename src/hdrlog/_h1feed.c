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
 *
 * This file holds the _h1fast api it uses, the slot tables, the slot helpers, the Feeder structure and its
 * lifetime, and the module; the rest is in headers of static functions included below, in this order:
 * _h1feed_call.h (one feed call's helpers: release, side capture, the MCP body hook, messages made),
 * _h1feed_feed.h (Feeder.feed and the Feeder type), _h1feed_deliver.h (the Deliverer) and _h1feed_track.h (Track
 * and its bound on_event).
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

#include "_h1feed_call.h"

#include "_h1feed_feed.h"

#include "_h1feed_deliver.h"

#include "_h1feed_track.h"

/* ---------------------------------------------------------------------------------------------- module */

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
