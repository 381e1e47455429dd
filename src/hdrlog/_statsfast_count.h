/* Counting one record into Acc's pending sums (Stats.observe's C path): Content-Length values, the record's
 * fields checked as Stats._add expects them, declined (1) for anything Python must count. Included by
 * _statsfast.c only, after _statsfast_groups.h. */

/* ----------------------------------------------------------------------------------- counting */

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
