/* Part of hdrlog._recfast (included by _recfast.c only): where the fields of the objects http_record reads live
 * (slots at their member descriptors' offsets), and the record dicts made from templates. */

/* ------------------------------------------------------------------------------------------ slots */

/* Where the fields of one type live: the offset of each name's member descriptor (a __slots__ / slots dataclass
 * field) in instances of `type`, or -1 (then getattr). Found again when another type comes, or when `type` changed
 * (its version tag). */
#define MAX_FIELDS 16
typedef struct {
    PyTypeObject *type;  /* a strong reference, or NULL */
    unsigned int tag;
    int n;
    const char *const *names;
    PyObject *inames[MAX_FIELDS];
    Py_ssize_t off[MAX_FIELDS];
} Layout;

static void layout_fit(Layout *L, PyTypeObject *t) {
    if (t == L->type && (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && t->tp_version_tag == L->tag)
        return;
    Py_INCREF(t);
    Py_XSETREF(L->type, t);
    int generic = t->tp_getattro == PyObject_GenericGetAttr && t->tp_setattro == PyObject_GenericSetAttr;
    for (int k = 0; k < L->n; k++) {
        L->off[k] = -1;
        PyObject *d = generic ? _PyType_Lookup(t, L->inames[k]) : NULL;
        if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY) && m->offset >= (Py_ssize_t)sizeof(PyObject) &&
                m->offset + (Py_ssize_t)sizeof(PyObject *) <= t->tp_basicsize)
                L->off[k] = m->offset;
        }
    }
    L->tag = (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
}

/* o.<field k> (a new reference), o of any type */
static PyObject *get(PyObject *o, Layout *L, int k) {
    if (Py_TYPE(o) == L->type && L->off[k] >= 0) {
        PyObject *v = *(PyObject **)((char *)o + L->off[k]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, L->inames[k]);  /* (also raises the AttributeError of an unset slot) */
}

static int set(PyObject *o, Layout *L, int k, PyObject *v) {
    if (Py_TYPE(o) == L->type && L->off[k] >= 0) {
        Py_INCREF(v);
        Py_XSETREF(*(PyObject **)((char *)o + L->off[k]), v);
        return 0;
    }
    return PyObject_SetAttr(o, L->inames[k], v);
}

enum { CO_ID, CO_PID, CO_COMM, CO_LIB, CO_LOCAL, CO_PEER, CO_ATTR, CO_PAIRER, CO_H2, CO_REC_KEY, CO_REC_CONN,
       CO_REC_PATH, CO_N };
static const char *const conn_names[CO_N] = {"id", "pid", "comm", "lib", "local", "peer", "attr", "pairer", "h2",
                                             "rec_key", "rec_conn", "rec_path"};
enum { M_TS, M_KIND, M_PROTO, M_HEADERS, M_METHOD, M_PATH, M_AUTHORITY, M_STATUS, M_REASON, M_TRUNCATED, M_STREAM,
       M_LATENCY, M_REQUEST, M_EXTRA, M_N };
static const char *const msg_names[M_N] = {"ts_ns", "kind", "proto", "headers", "method", "path", "authority",
                                           "status", "reason", "truncated", "stream", "latency_ms", "request",
                                           "extra"};
static const char *const ev_names[1] = {"tid"};
static const char *const pairer_names[1] = {"role"};
static Layout conn_l = {.n = CO_N, .names = conn_names}, msg_l = {.n = M_N, .names = msg_names},
              ev_l = {.n = 1, .names = ev_names}, pairer_l = {.n = 1, .names = pairer_names};

/* ------------------------------------------------------------------------------------------ record dicts */

/* Records are made from templates: a dict of the record's keys in order, values None, copied (its keys table copied
 * in one go) and its values then replaced: ~0.3 µs less per record than inserting them into a new dict. The values
 * are written into the copy's entries directly where that was seen to work at import (CPython 3.11's dict layout,
 * checked on a copy of every template), ~0.25 µs less than PyDict_SetItem for each; else PyDict_SetItem. */
#define N_RECVALS 17
static PyObject *rec_tmpl[2][2];  /* [response, request][without, with "stream"] */
static PyObject *req_tmpl;        /* a response's "request": method, path */
static int direct_values;

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
typedef struct {  /* CPython 3.11's PyDictKeysObject (Include/internal/pycore_dict.h) */
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size, dk_log2_index_bytes, dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable, dk_nentries;
    char dk_indices[];
} keys311;
typedef struct { PyObject *me_key, *me_value; } entry311;  /* PyDictUnicodeEntry: a table of str keys only */

static entry311 *entries(PyObject *d) {
    keys311 *k = (keys311 *)((PyDictObject *)d)->ma_keys;
    return (entry311 *)(k->dk_indices + ((size_t)1 << k->dk_log2_index_bytes));
}

/* Do a template's copies hold its keys in order in their own table of str-key entries, where the values PyDict_SetItem
 * sets are found? */
static int direct_works(PyObject *tmpl) {
    PyObject *d = PyDict_Copy(tmpl);
    if (d == NULL)
        return -1;
    Py_ssize_t n = PyDict_GET_SIZE(tmpl), pos = 0, i = 0;
    int ok = PyDict_CheckExact(d) && ((PyDictObject *)d)->ma_values == NULL &&
             ((PyDictObject *)d)->ma_keys != ((PyDictObject *)tmpl)->ma_keys && ((keys311 *)((PyDictObject *)d)->ma_keys)->dk_kind == 1 &&
             ((keys311 *)((PyDictObject *)d)->ma_keys)->dk_nentries == n && ((keys311 *)((PyDictObject *)d)->ma_keys)->dk_refcnt == 1;
    PyObject *key, *val;
    while (ok && PyDict_Next(tmpl, &pos, &key, &val)) {
        PyObject *mark = PyLong_FromSsize_t(1000 + i);
        if (mark == NULL || PyDict_SetItem(d, key, mark) < 0) {
            Py_XDECREF(mark);
            Py_DECREF(d);
            return -1;
        }
        ok = entries(d)[i].me_key == key && entries(d)[i].me_value == mark;
        Py_DECREF(mark);
        i++;
    }
    Py_DECREF(d);
    return ok;
}
#endif

static int make_templates(void) {
    PyObject *req[] = {K_type, K_ts, K_pid, K_tid, K_comm, K_lib, K_direction, K_conn, K_proto, K_kind, K_method,
                       K_path, K_authority, K_stream, K_headers, K_truncated, NULL};
    PyObject *resp[] = {K_type, K_ts, K_pid, K_tid, K_comm, K_lib, K_direction, K_conn, K_proto, K_kind, K_status,
                        K_reason, K_latency, K_request, K_stream, K_headers, K_truncated, NULL};
    PyObject *rp[] = {K_method, K_path, NULL};
    PyObject **all[5] = {resp, resp, req, req, rp}, *t[5];
    for (int i = 0; i < 5; i++) {
        if ((t[i] = PyDict_New()) == NULL)
            return -1;
        for (PyObject **k = all[i]; *k != NULL; k++)
            if ((i == 4 || (i & 1) || *k != K_stream) && PyDict_SetItem(t[i], *k, Py_None) < 0)
                return -1;
    }
    rec_tmpl[0][0] = t[0], rec_tmpl[0][1] = t[1], rec_tmpl[1][0] = t[2], rec_tmpl[1][1] = t[3], req_tmpl = t[4];
    direct_values = 0;
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    direct_values = 1;
    for (int i = 0; i < 5 && direct_values; i++) {
        int ok = direct_works(t[i]);
        if (ok < 0)
            return -1;
        direct_values = ok;
    }
#endif
    return 0;
}

/* A copy of template tmpl with its values vals (as many as its keys) */
static PyObject *from_template(PyObject *tmpl, PyObject **vals) {
    PyObject *d = PyDict_Copy(tmpl);
    if (d == NULL)
        return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(tmpl);
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (direct_values) {
        entry311 *e = entries(d);
        for (Py_ssize_t i = 0; i < n; i++)
            Py_SETREF(e[i].me_value, Py_NewRef(vals[i]));
        if (!PyObject_GC_IsTracked(d))  /* as PyDict_SetItem would once a value is a container (always here) */
            PyObject_GC_Track(d);
        return d;
    }
#endif
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *val;
    while (PyDict_Next(tmpl, &pos, &key, &val))
        if (PyDict_SetItem(d, key, vals[i++]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    return d;
}
