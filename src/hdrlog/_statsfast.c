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
 *
 * This file holds the interned names, the Acc and GStat structures, Acc's lifetime and type, and the module; the
 * rest is in headers of static functions included below, in this order: _statsfast_flush.h (flush),
 * _statsfast_groups.h (group lookup, latency reservoirs), _statsfast_count.h (counting a record) and
 * _statsfast_out.h (JsonlWriter, Chain).
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

#include "_statsfast_flush.h"

#include "_statsfast_groups.h"

#include "_statsfast_count.h"

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

#include "_statsfast_out.h"

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
