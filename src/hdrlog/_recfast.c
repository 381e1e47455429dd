/* hdrlog._recfast: C fast path of records and redaction (hdrlog.records, hdrlog.redact).
 *
 * Redact(kblock, codes, values, markers, memo_max, show_secrets, Headers): a Redactor's C side (Redactor._fast), made
 * by Redactor.__init__ from the key's 64-byte padded block (HMAC-SHA256 pad states are hashed once here; the key
 * itself is not kept) and the Redactor's own memo dicts, which both sides read and fill alike. Its
 * headers(redactor, headers) is Redactor.headers: the same Headers list (with content_length) or plain list, the
 * same memos, the Cookie / Set-Cookie / Authorization splits and markers computed here; None when it declines
 * (anything but a list or tuple of 2-item tuples or lists of str), and the Python code runs.
 *
 * Recorder(http_record_py, mcp_tail, switch).http_record is records.http_record: the same record dict (keys in the
 * same order), the per-connection "conn" object and path memo of records.py, the rfc3339 timestamp. It calls
 * http_record_py when switch["FAST"] is not True (redact.FAST: the Python reference), when the redactor has no
 * Redact, or for a timestamp outside years 1970..9999; rarely taken branches call the Redactor's Python methods
 * (a header name's class, an Authorization value of an unusual form, a query parameter name not seen before, a
 * non-ASCII path whose query may hold a secret, the MCP session). tests/test_recfast.py compares both paths on the
 * fixtures and on generated messages.
 *
 * Slots of the dataclasses (Conn, HttpMessage, Event, Pairer) are read at their member descriptors' offsets, found
 * once per type (and again when the type changes); any other attribute goes through getattr.
 *
 * One translation unit in five files: this one (the record, the module), _recfast_sha256.h (SHA-256),
 * _recfast_mark.h (markers, one secret value's redaction), _recfast_redact.h (Redactor.headers, the Redact type),
 * _recfast_slots.h (fields at slot offsets, record dicts from templates).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#include "_recfast_sha256.h"

static sha_block_fn sha_blocks;  /* chosen once at import: sha_blocks_ni when the CPU has it */

enum { C_PLAIN, C_WHOLE, C_CL, C_AUTH, C_COOKIE, C_SET_COOKIE, N_CLASSES };  /* = redact._PLAIN ... _SET_COOKIE */

static PyObject *S_code, *S_authorization, *S_path, *S_headers, *S_fast, *S_FAST, *S_role, *S_attribution,
    *S_request, *S_http, *S_mcp, *S_update, *S_content_length, *S_secret_param;
/* record keys */
static PyObject *K_type, *K_ts, *K_pid, *K_tid, *K_comm, *K_lib, *K_direction, *K_conn, *K_proto, *K_kind,
    *K_method, *K_path, *K_authority, *K_status, *K_reason, *K_latency, *K_request, *K_stream, *K_headers,
    *K_truncated, *K_id, *K_local, *K_peer, *K_attribution, *K_role;

#include "_recfast_mark.h"
#include "_recfast_redact.h"

#include "_recfast_slots.h"

/* ------------------------------------------------------------------------------------------ Recorder */

typedef struct {
    PyObject_HEAD
    PyObject *py;        /* records.http_record_py: the reference */
    PyObject *mcp_tail;  /* records._mcp_tail(rec, redactor): the MCP session's redaction */
    PyObject *sw;        /* the dict holding "FAST" (hdrlog.redact's globals) */
} RecorderObject;

/* the rfc3339 prefix of the last second seen (a cache of a pure function, as records.py's) */
static long long ts_last_sec = -1;
static char ts_prefix[20];

static PyObject *rfc3339(long long sec, long long ns) {
    if (sec != ts_last_sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        if (gmtime_r(&t, &tm) == NULL) {
            PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
            return NULL;
        }
        char buf[80];  /* 19 characters for years 1970..9999 (the caller's range) */
        snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        memcpy(ts_prefix, buf, 19);
        ts_last_sec = sec;
    }
    PyObject *s = PyUnicode_New(27, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *p = PyUnicode_1BYTE_DATA(s);
    memcpy(p, ts_prefix, 19);
    p[19] = '.';
    long us = (long)(ns / 1000);
    for (int i = 25; i >= 20; i--, us /= 10)
        p[i] = (Py_UCS1)('0' + us % 10);
    p[26] = 'Z';
    return s;
}

/* Does the ASCII query q[0:n] hold, lowercased, a word of redact._MAYBE_SECRET_QUERY? (Each position is tried
 * only against the words starting with its letter.) */
static int has_word(const Py_UCS1 *q, Py_ssize_t n, const char *w) {
    Py_ssize_t j = 0;
    while (w[j] && j < n && Py_TOLOWER(q[j]) == (unsigned char)w[j])
        j++;
    return !w[j];
}

static int maybe_secret_query(const Py_UCS1 *q, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_UCS1 *p = q + i;
        Py_ssize_t m = n - i;
        switch (Py_TOLOWER(*p)) {
        case '%':
            return 1;
        case 't':
            if (has_word(p, m, "token"))
                return 1;
            break;
        case 's':
            if (has_word(p, m, "secret") || has_word(p, m, "sig") || has_word(p, m, "sid") || has_word(p, m, "session"))
                return 1;
            break;
        case 'p':
            if (has_word(p, m, "pass") || has_word(p, m, "pwd"))
                return 1;
            break;
        case 'k':
            if (has_word(p, m, "key"))
                return 1;
            break;
        case 'a':
            if (has_word(p, m, "auth"))
                return 1;
            break;
        case 'j':
            if (has_word(p, m, "jwt"))
                return 1;
            break;
        case 'c':
            if (has_word(p, m, "credential") || has_word(p, m, "code"))
                return 1;
            break;
        }
    }
    return 0;
}

/* Redactor.path for an ASCII path whose query (after the "?" at q) may hold a secret parameter: the values of the
 * secret ones (a name in Redactor._params, else Redactor._secret_param's answer) marked, separators and the fragment
 * kept; the path itself when nothing was marked. */
static PyObject *redact_query(RedactObject *st, PyObject *redactor, PyObject *path, Py_ssize_t q) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(path);
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(path);
    const Py_UCS1 *hash = memchr(s + q, '#', (size_t)(n - q));
    Py_ssize_t end = hash != NULL ? hash - s : n, start = q + 1;
    int changed = 0;
    Out o;
    out_init(&o, path);
    if (out_sub(&o, 0, start) < 0)
        goto fail;
    while (start < end) {  /* the items between "&" and ";" (redact._PARAM_SPLIT), separators kept */
        Py_ssize_t stop = start;
        while (stop < end && s[stop] != '&' && s[stop] != ';')
            stop++;
        const Py_UCS1 *eqp = memchr(s + start, '=', (size_t)(stop - start));
        Py_ssize_t eq = eqp != NULL ? eqp - s : -1;
        int secret = 0;
        if (eq >= 0 && eq + 1 < stop) {
            PyObject *name = PyUnicode_Substring(path, start, eq);
            if (name == NULL)
                goto fail;
            PyObject *known = PyDict_GetItemWithError(st->params, name);
            if (known != NULL)
                secret = PyObject_IsTrue(known);
            else if (PyErr_Occurred())
                secret = -1;
            else {
                PyObject *r = PyObject_CallMethodOneArg(redactor, S_secret_param, name);
                secret = r == NULL ? -1 : PyObject_IsTrue(r);
                Py_XDECREF(r);
            }
            Py_DECREF(name);
            if (secret < 0)
                goto fail;
        }
        if (secret) {
            changed = 1;
            if (out_sub(&o, start, eq + 1) < 0 || out_marker(&o, st, eq + 1, stop, 1) < 0)
                goto fail;
        } else if (out_sub(&o, start, stop) < 0) {
            goto fail;
        }
        if (stop < end && out_sub(&o, stop, stop + 1) < 0)
            goto fail;
        start = stop + 1;
    }
    if (!changed) {
        out_free(&o);
        return Py_NewRef(path);
    }
    if (out_sub(&o, end, n) < 0)
        goto fail;
    return out_finish(&o);
fail:
    out_free(&o);
    return NULL;
}

/* redactor.path(path): unchanged where Redactor.path returns it unsplit (an ASCII path without "?" or with a query
 * holding none of the words), else the Python method. */
static PyObject *redact_path(RedactObject *st, PyObject *redactor, PyObject *path) {
    if (PyUnicode_CheckExact(path) && PyUnicode_IS_ASCII(path)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(path);
        if (st->show || n == 0)
            return Py_NewRef(path);
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(path);
        const Py_UCS1 *q = memchr(s, '?', (size_t)n);
        if (q == NULL || !maybe_secret_query(q + 1, n - (q + 1 - s)))
            return Py_NewRef(path);
        return redact_query(st, redactor, path, q - s);
    }
    return PyObject_CallMethodOneArg(redactor, S_path, path);
}

/* records._path: the redacted path, remembered for the connection's last path (a response repeats it) */
static PyObject *conn_path(RedactObject *st, PyObject *conn, PyObject *redactor, PyObject *path) {
    PyObject *last = get(conn, &conn_l, CO_REC_PATH);
    if (last == NULL)
        return NULL;
    if (PyTuple_CheckExact(last) && PyTuple_GET_SIZE(last) == 3 && PyTuple_GET_ITEM(last, 1) == redactor) {
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(last, 0), path, Py_EQ);
        if (eq != 0) {
            PyObject *r = eq > 0 ? Py_NewRef(PyTuple_GET_ITEM(last, 2)) : NULL;
            Py_DECREF(last);
            return r;
        }
    }
    Py_DECREF(last);
    PyObject *red = redact_path(st, redactor, path);
    if (red == NULL)
        return NULL;
    PyObject *t = PyTuple_Pack(3, path, redactor, red);
    if (t == NULL || set(conn, &conn_l, CO_REC_PATH, t) < 0)
        Py_CLEAR(red);
    Py_XDECREF(t);
    return red;
}

static int put(PyObject *d, PyObject *k, PyObject *v) {  /* d[k] = v, v a new reference (NULL: an error) */
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return rc;
}

/* The record's "conn" object: the connection's last one while (role, local, peer, attr) stay the same, else a new
 * one (records._conn_object) */
static PyObject *conn_object(PyObject *conn, PyObject *role, PyObject *local, PyObject *peer, PyObject *attr) {
    PyObject *key = get(conn, &conn_l, CO_REC_KEY);
    if (key == NULL)
        return NULL;
    if (PyTuple_CheckExact(key) && PyTuple_GET_SIZE(key) == 4) {
        PyObject *now[4] = {role, local, peer, attr};
        int same = 1;
        for (int i = 0; i < 4 && same == 1; i++)
            same = PyObject_RichCompareBool(now[i], PyTuple_GET_ITEM(key, i), Py_EQ);
        if (same < 0) {
            Py_DECREF(key);
            return NULL;
        }
        if (same) {
            Py_DECREF(key);
            return get(conn, &conn_l, CO_REC_CONN);
        }
    }
    Py_DECREF(key);
    key = PyTuple_Pack(4, role, local, peer, attr);
    if (key == NULL || set(conn, &conn_l, CO_REC_KEY, key) < 0) {
        Py_XDECREF(key);
        return NULL;
    }
    Py_DECREF(key);
    PyObject *co = PyDict_New();
    if (co == NULL || put(co, K_id, get(conn, &conn_l, CO_ID)) < 0 || PyDict_SetItem(co, K_role, role) < 0 ||
        put(co, K_local, get(conn, &conn_l, CO_LOCAL)) < 0 || put(co, K_peer, get(conn, &conn_l, CO_PEER)) < 0 ||
        put(co, K_attribution, PyObject_GetAttr(conn, S_attribution)) < 0 || set(conn, &conn_l, CO_REC_CONN, co) < 0) {
        Py_XDECREF(co);
        return NULL;
    }
    return co;
}

static PyObject *fallback(RecorderObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return PyObject_Vectorcall(self->py, args, nargsf, kwnames);
}

/* http_record(conn, direction, msg, ev, redactor) -> records.http_record_py's record */
static PyObject *Recorder_http_record(RecorderObject *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames) {
    if (nargs != 5 || kwnames != NULL)
        return fallback(self, args, nargs, kwnames);
    PyObject *conn = args[0], *direction = args[1], *msg = args[2], *ev = args[3], *redactor = args[4];
    PyObject *sw = PyDict_GetItemWithError(self->sw, S_FAST);
    if (sw != Py_True) {
        if (PyErr_Occurred())
            return NULL;
        return fallback(self, args, nargs, NULL);
    }
    PyObject *st = PyObject_GetAttr(redactor, S_fast);
    if (st == NULL || !Py_IS_TYPE(st, &RedactType)) {
        if (st == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        Py_XDECREF(st);
        return fallback(self, args, nargs, NULL);
    }
    layout_fit(&conn_l, Py_TYPE(conn));
    layout_fit(&msg_l, Py_TYPE(msg));
    layout_fit(&ev_l, Py_TYPE(ev));
    PyObject *f[M_N] = {NULL}, *v[N_RECVALS] = {NULL}, *rec = NULL, *h2 = NULL, *role = NULL, *local = NULL, *peer = NULL, *attr = NULL,
             *co = NULL, *req = NULL, *ts = NULL;
    long long t = -1, sec = -1;
    f[M_TS] = get(msg, &msg_l, M_TS);
    if (f[M_TS] == NULL)
        goto done;
    if (PyLong_CheckExact(f[M_TS])) {
        int over = 0;
        t = PyLong_AsLongLongAndOverflow(f[M_TS], &over);
        if (t == -1 && PyErr_Occurred())
            goto done;
        sec = over ? -1 : t / 1000000000;
    }
    if (t < 0 || sec > 253402300799LL) {  /* not an int from 1970 to 9999: the Python code */
        Py_CLEAR(f[M_TS]);
        Py_DECREF(st);
        return fallback(self, args, nargs, NULL);
    }
    if ((ts = rfc3339(sec, t - sec * 1000000000)) == NULL)
        goto done;
    /* the "conn" object (Conn.role inline: the pairer's, or the h2 connection's) */
    if ((h2 = get(conn, &conn_l, CO_H2)) == NULL)
        goto done;
    if (h2 == Py_None) {
        PyObject *pairer = get(conn, &conn_l, CO_PAIRER);
        if (pairer == NULL)
            goto done;
        layout_fit(&pairer_l, Py_TYPE(pairer));
        role = get(pairer, &pairer_l, 0);
        Py_DECREF(pairer);
    } else {
        role = PyObject_GetAttr(h2, S_role);
    }
    if (role == NULL || (local = get(conn, &conn_l, CO_LOCAL)) == NULL ||
        (peer = get(conn, &conn_l, CO_PEER)) == NULL || (attr = get(conn, &conn_l, CO_ATTR)) == NULL ||
        (co = conn_object(conn, role, local, peer, attr)) == NULL)
        goto done;
    for (int k = M_KIND; k < M_N; k++)
        if ((f[k] = get(msg, &msg_l, k)) == NULL)
            goto done;
    int is_req = PyObject_RichCompareBool(f[M_KIND], S_request, Py_EQ);
    if (is_req < 0)
        goto done;
    /* the values in the template's key order (see make_templates) */
    int nv = 0, has_stream = f[M_STREAM] != Py_None;
#define VAL(x)                          \
    do {                                \
        if ((v[nv++] = (x)) == NULL)    \
            goto done;                  \
    } while (0)
    VAL(Py_NewRef(S_http));
    VAL(Py_NewRef(ts));
    VAL(get(conn, &conn_l, CO_PID));
    VAL(get(ev, &ev_l, 0));
    VAL(get(conn, &conn_l, CO_COMM));
    VAL(get(conn, &conn_l, CO_LIB));
    VAL(Py_NewRef(direction));
    VAL(Py_NewRef(co));
    VAL(Py_NewRef(f[M_PROTO]));
    if (is_req) {
        VAL(Py_NewRef(S_request));
        VAL(Py_NewRef(f[M_METHOD]));
        VAL(f[M_PATH] == Py_None ? Py_NewRef(Py_None) : conn_path((RedactObject *)st, conn, redactor, f[M_PATH]));
        VAL(Py_NewRef(f[M_AUTHORITY]));
    } else {
        VAL(Py_NewRef(f[M_KIND]));
        VAL(Py_NewRef(f[M_STATUS]));
        VAL(Py_NewRef(f[M_REASON]));
        VAL(Py_NewRef(f[M_LATENCY]));
        req = f[M_REQUEST];
        if (req == Py_None) {
            VAL(Py_NewRef(Py_None));
        } else {  /* {"method": req.method, "path": the connection's redacted path} */
            PyObject *pv[2] = {get(req, &msg_l, M_METHOD), NULL}, *rp = NULL;
            if (pv[0] != NULL && (pv[1] = get(req, &msg_l, M_PATH)) != NULL && pv[1] != Py_None)
                Py_SETREF(pv[1], conn_path((RedactObject *)st, conn, redactor, pv[1]));
            if (pv[0] != NULL && pv[1] != NULL)
                rp = from_template(req_tmpl, pv);
            Py_XDECREF(pv[0]);
            Py_XDECREF(pv[1]);
            VAL(rp);
        }
    }
    if (has_stream)
        VAL(Py_NewRef(f[M_STREAM]));
    PyObject *hs = do_headers((RedactObject *)st, redactor, f[M_HEADERS]);
    if (hs == Py_None) {  /* declined: Redactor.headers (the Python code) */
        Py_DECREF(hs);
        hs = PyObject_CallMethodOneArg(redactor, S_headers, f[M_HEADERS]);
    }
    VAL(hs);
    VAL(Py_NewRef(f[M_TRUNCATED]));
#undef VAL
    if ((rec = from_template(rec_tmpl[is_req][has_stream], v)) == NULL)
        goto done;
    PyObject *extra = f[M_EXTRA];
    int any = PyDict_CheckExact(extra) ? PyDict_GET_SIZE(extra) > 0 : PyObject_IsTrue(extra);
    if (any < 0)
        goto fail;
    if (any) {
        if (PyDict_CheckExact(extra)) {
            if (PyDict_Update(rec, extra) < 0)
                goto fail;
        } else {
            PyObject *r = PyObject_CallMethodOneArg(rec, S_update, extra);
            if (r == NULL)
                goto fail;
            Py_DECREF(r);
        }
        int has = PySequence_Contains(extra, S_mcp);
        if (has < 0)
            goto fail;
        if (has) {
            PyObject *r = PyObject_CallFunctionObjArgs(self->mcp_tail, rec, redactor, NULL);
            if (r == NULL)
                goto fail;
            Py_DECREF(r);
        }
    }
    goto done;
fail:
    Py_CLEAR(rec);
done:
    for (int k = 0; k < M_N; k++)
        Py_XDECREF(f[k]);
    for (int k = 0; k < N_RECVALS; k++)
        Py_XDECREF(v[k]);
    Py_XDECREF(h2);
    Py_XDECREF(role);
    Py_XDECREF(local);
    Py_XDECREF(peer);
    Py_XDECREF(attr);
    Py_XDECREF(co);
    Py_XDECREF(ts);
    Py_DECREF(st);
    return rec;
}

static int Recorder_init(RecorderObject *self, PyObject *args, PyObject *kw) {
    PyObject *py, *tail, *sw;
    if (!PyArg_ParseTuple(args, "OOO!:Recorder", &py, &tail, &PyDict_Type, &sw))
        return -1;
    Py_XSETREF(self->py, Py_NewRef(py));
    Py_XSETREF(self->mcp_tail, Py_NewRef(tail));
    Py_XSETREF(self->sw, Py_NewRef(sw));
    return 0;
}

static int Recorder_traverse(RecorderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->py);
    Py_VISIT(self->mcp_tail);
    Py_VISIT(self->sw);
    return 0;
}

static int Recorder_clear(RecorderObject *self) {
    Py_CLEAR(self->py);
    Py_CLEAR(self->mcp_tail);
    Py_CLEAR(self->sw);
    return 0;
}

static void Recorder_dealloc(RecorderObject *self) {
    PyObject_GC_UnTrack(self);
    Recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Recorder_methods[] = {
    {"http_record", (PyCFunction)(void (*)(void))Recorder_http_record, METH_FASTCALL | METH_KEYWORDS,
     "http_record(conn, direction, msg, ev, redactor) -> the record (records.http_record)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._recfast.Recorder",
    .tp_basicsize = sizeof(RecorderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Recorder(http_record_py, mcp_tail, switch): see the module's docstring.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Recorder_init,
    .tp_dealloc = (destructor)Recorder_dealloc,
    .tp_traverse = (traverseproc)Recorder_traverse,
    .tp_clear = (inquiry)Recorder_clear,
    .tp_methods = Recorder_methods,
};

/* ------------------------------------------------------------------------------------------ module */

static PyObject *mod_sha256(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    int ni;
    Py_buffer b;
    if (nargs != 2 || (ni = PyObject_IsTrue(args[1])) < 0) {
        PyErr_SetString(PyExc_TypeError, "sha256(data, ni) takes 2 arguments");
        return NULL;
    }
    if (ni && !sha_have_ni()) {
        PyErr_SetString(PyExc_ValueError, "this CPU has no SHA extensions");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t st[8];
    unsigned char d[32];
    memcpy(st, sha_iv, sizeof(st));
    sha_finish(ni ? sha_blocks_ni : sha_blocks_c, st, 0, b.buf, (size_t)b.len, d);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyMethodDef mod_methods[] = {
    {"sha256", (PyCFunction)(void (*)(void))mod_sha256, METH_FASTCALL,
     "sha256(data, ni) -> SHA-256 digest with the portable (ni false) or the SHA-NI compression (tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_recfast", "C fast path of records and redaction (hdrlog.records, hdrlog.redact).", -1,
    mod_methods, NULL, NULL, NULL, NULL,
};

static int intern(PyObject **p, const char *s) {
    *p = PyUnicode_InternFromString(s);
    return *p == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__recfast(void) {
    struct { PyObject **p; const char *s; } names[] = {
        {&S_code, "_code"}, {&S_authorization, "_authorization"}, {&S_path, "path"}, {&S_headers, "headers"},
        {&S_fast, "_fast"}, {&S_FAST, "FAST"}, {&S_role, "role"}, {&S_attribution, "attribution"},
        {&S_request, "request"}, {&S_http, "http"}, {&S_mcp, "mcp"}, {&S_update, "update"},
        {&S_content_length, "content_length"}, {&S_secret_param, "_secret_param"}, {&K_type, "type"}, {&K_ts, "ts"}, {&K_pid, "pid"}, {&K_tid, "tid"},
        {&K_comm, "comm"}, {&K_lib, "lib"}, {&K_direction, "direction"}, {&K_conn, "conn"}, {&K_proto, "proto"},
        {&K_kind, "kind"}, {&K_method, "method"}, {&K_path, "path"}, {&K_authority, "authority"},
        {&K_status, "status"}, {&K_reason, "reason"}, {&K_latency, "latency_ms"}, {&K_request, "request"},
        {&K_stream, "stream"}, {&K_headers, "headers"}, {&K_truncated, "truncated"}, {&K_id, "id"},
        {&K_local, "local"}, {&K_peer, "peer"}, {&K_attribution, "attribution"}, {&K_role, "role"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i].p == NULL && intern(names[i].p, names[i].s) < 0)
            return NULL;
    Layout *ls[] = {&conn_l, &msg_l, &ev_l, &pairer_l};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < ls[i]->n; k++)
            if (ls[i]->inames[k] == NULL && intern(&ls[i]->inames[k], ls[i]->names[k]) < 0)
                return NULL;
    if (rec_tmpl[0][0] == NULL && make_templates() < 0)
        return NULL;
    for (int k = 0; k < N_CLASSES; k++)
        if (class_int[k] == NULL && (class_int[k] = PyLong_FromLong(k)) == NULL)
            return NULL;
    sha_blocks = sha_have_ni() ? sha_blocks_ni : sha_blocks_c;
    if (PyType_Ready(&RedactType) < 0 || PyType_Ready(&RecorderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Redact", (PyObject *)&RedactType) < 0 ||
        PyModule_AddObjectRef(m, "Recorder", (PyObject *)&RecorderType) < 0 ||
        PyModule_AddIntConstant(m, "SHA_NI", sha_blocks == sha_blocks_ni) < 0 ||
        PyModule_AddIntConstant(m, "DIRECT_VALUES", direct_values) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
