/* Groups and latency reservoirs of hdrlog._statsfast's Acc: a record's (method, bare path, peer) mapped to its
 * route and peer GStat (Stats._find_groups on a new key), a GStat refreshed from its Group after a flush, and the
 * reservoir sampling with random.Random.randrange's draws. Included by _statsfast.c only. */

/* -------------------------------------------------------------- groups and latency reservoirs */

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
