/* Acc's flush of hdrlog._statsfast: the pending sums of every dirty group (Group attributes, statuses) and the
 * shared ones (kinds, protocols, first/last timestamps) added to the Stats' Python objects, as Stats._add would
 * have. Included by _statsfast.c only (which defines Acc, GStat and the interned names used here). */

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
