/* Part of hdrlog._recfast (included by _recfast.c only, after _recfast_mark.h): Redactor.headers in C and the Redact
 * type (Redactor._fast). */

static PyObject *pair(PyObject *a, PyObject *b) {
    PyObject *p = PyList_New(2);
    if (p != NULL) {
        Py_INCREF(a);
        Py_INCREF(b);
        PyList_SET_ITEM(p, 0, a);
        PyList_SET_ITEM(p, 1, b);
    }
    return p;
}

/* The 2 items of a header, borrowed; 0 when it is not a 2-item tuple or list. */
static int header_items(PyObject *it, PyObject **n, PyObject **v) {
    if (PyTuple_CheckExact(it) && PyTuple_GET_SIZE(it) == 2) {
        *n = PyTuple_GET_ITEM(it, 0);
        *v = PyTuple_GET_ITEM(it, 1);
        return 1;
    }
    if (PyList_CheckExact(it) && PyList_GET_SIZE(it) == 2) {
        *n = PyList_GET_ITEM(it, 0);
        *v = PyList_GET_ITEM(it, 1);
        return 1;
    }
    return 0;
}

/* A header name's class (Redactor._codes, filled by Redactor._code when it misses), -1 on an error, -2 for anything
 * else than 0..5 (declined). The last names seen are remembered by identity (parsers hand the same str object for a
 * name that comes back): one pointer comparison instead of a dict look-up. */
static long name_class(RedactObject *r, PyObject *redactor, PyObject *n) {
    size_t slot = ((uintptr_t)n >> 4) % NAME_SLOTS;
    if (r->names[slot] == n)
        return r->name_cls[slot];
    PyObject *co = PyDict_GetItemWithError(r->codes, n);
    if (co != NULL)
        Py_INCREF(co);
    else if (PyErr_Occurred() || (co = PyObject_CallMethodOneArg(redactor, S_code, n)) == NULL)
        return -1;
    long cl = -2;
    for (int k = 0; k < N_CLASSES; k++)
        if (co == class_int[k])  /* small ints are shared */
            cl = k;
    Py_DECREF(co);
    if (cl < 0 || (cl != C_PLAIN && cl != C_CL && r->memos[cl] == NULL))
        return -2;
    Py_INCREF(n);  /* held: its address cannot be another str's while it is here */
    Py_XSETREF(r->names[slot], n);
    r->name_cls[slot] = (unsigned char)cl;
    return cl;
}

/* Redactor.headers; Py_None (a new reference) when declining. */
static PyObject *do_headers(RedactObject *r, PyObject *redactor, PyObject *headers) {
    if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers))
        Py_RETURN_NONE;
    PyObject *out = r->show ? PyList_New(0) : r->headers_type->tp_alloc(r->headers_type, 0);
    PyObject *clen = NULL;
    if (out == NULL)
        return NULL;
    Py_ssize_t cap = PySequence_Fast_GET_SIZE(headers);
    if (cap > 0) {  /* room for every pair at once (appends would grow it 0, 4, 8, 16...) */
        PyListObject *l = (PyListObject *)out;
        l->ob_item = PyMem_New(PyObject *, cap);
        if (l->ob_item == NULL) {
            Py_DECREF(out);
            return PyErr_NoMemory();
        }
        l->allocated = cap;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(headers); i++) {  /* its size read again: Python ran */
        PyObject *n, *v, *item = PySequence_Fast_GET_ITEM(headers, i), *val = NULL, *p;
        Py_INCREF(item);
        if (!header_items(item, &n, &v) || !PyUnicode_CheckExact(n)) {
            Py_DECREF(item);
            goto decline;
        }
        int c = C_PLAIN;
        if (!r->show) {
            long cl = name_class(r, redactor, n);
            if (cl == -1) {
                Py_DECREF(item);
                goto fail;
            }
            if (cl < 0) {
                Py_DECREF(item);
                goto decline;
            }
            c = (int)cl;
        }
        if (c == C_CL) {
            if (clen == NULL || clen == Py_None)  /* (Python: "if clen is None") */
                Py_XSETREF(clen, Py_NewRef(v));
        } else if (c != C_PLAIN) {
            if (!PyUnicode_CheckExact(v)) {
                Py_DECREF(item);
                goto decline;
            }
            if (PyUnicode_GET_LENGTH(v) > 0) {
                Py_hash_t h = PyObject_Hash(v);
                if (h == -1) {
                    Py_DECREF(item);
                    goto fail;
                }
                if ((val = front_get(r, c, h)) != NULL) {
                    Py_INCREF(val);
                } else {
                    PyObject *hk = PyLong_FromSsize_t(h);
                    if (hk == NULL) {
                        Py_DECREF(item);
                        goto fail;
                    }
                    val = PyDict_GetItemWithError(r->memos[c], hk);
                    if (val != NULL)
                        Py_INCREF(val);
                    else if (!PyErr_Occurred())
                        val = redact_value(r, redactor, c, v, hk);
                    Py_DECREF(hk);
                    if (val == NULL) {
                        Py_DECREF(item);
                        goto fail;
                    }
                    front_put(r, c, h, val);
                }
            }
        }
        p = pair(n, val != NULL ? val : v);
        Py_XDECREF(val);
        Py_DECREF(item);
        if (p == NULL)
            goto fail;
        Py_ssize_t k = PyList_GET_SIZE(out);
        if (k < ((PyListObject *)out)->allocated) {  /* the room made above (Python code may have grown headers) */
            PyList_SET_ITEM(out, k, p);
            Py_SET_SIZE(out, k + 1);
        } else {
            int rc = PyList_Append(out, p);
            Py_DECREF(p);
            if (rc < 0)
                goto fail;
        }
    }
    if (!r->show) {
        PyObject **slot = (PyObject **)((char *)out + r->clen_off);
        Py_XSETREF(*slot, clen != NULL ? clen : Py_NewRef(Py_None));
    }
    return out;
decline:
    Py_XDECREF(clen);
    Py_DECREF(out);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(clen);
    Py_DECREF(out);
    return NULL;
}

static PyObject *Redact_headers(RedactObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "headers(redactor, headers) takes 2 arguments");
        return NULL;
    }
    return do_headers(self, args[0], args[1]);
}

static PyObject *Redact_hmac(RedactObject *self, PyObject *arg) {
    Py_buffer b;
    unsigned char d[32];
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    hmac_digest(self, b.buf, (size_t)b.len, d);
    PyBuffer_Release(&b);
    PyObject *out = PyBytes_FromStringAndSize((const char *)d, 32);
    sha_wipe(d, sizeof(d));
    return out;
}

static PyObject *Redact_mark(RedactObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "mark(secret: str, remember: bool) takes 2 arguments");
        return NULL;
    }
    int rem = PyObject_IsTrue(args[1]);
    if (rem < 0)
        return NULL;
    return marker_of(self, args[0], 0, PyUnicode_GET_LENGTH(args[0]), rem);
}

static int Redact_init(RedactObject *self, PyObject *args, PyObject *kw) {
    Py_buffer kb;
    PyObject *codes, *values, *markers, *htype, *params;
    Py_ssize_t memo_max;
    int show;
    if (!PyArg_ParseTuple(args, "y*O!O!O!npO!O!:Redact", &kb, &PyDict_Type, &codes, &PyTuple_Type, &values,
                          &PyDict_Type, &markers, &memo_max, &show, &PyType_Type, &htype, &PyDict_Type, &params))
        return -1;
    int ok = kb.len == 64 && PyTuple_GET_SIZE(values) == N_CLASSES;
    if (ok) {
        unsigned char pad[64];
        for (int i = 0; i < 64; i++)
            pad[i] = ((const unsigned char *)kb.buf)[i] ^ 0x36;
        memcpy(self->inner, sha_iv, sizeof(sha_iv));
        sha_blocks(self->inner, pad, 1);
        for (int i = 0; i < 64; i++)
            pad[i] = ((const unsigned char *)kb.buf)[i] ^ 0x5c;
        memcpy(self->outer, sha_iv, sizeof(sha_iv));
        sha_blocks(self->outer, pad, 1);
        sha_wipe(pad, sizeof(pad));
    }
    PyBuffer_Release(&kb);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "Redact: a 64-byte key block and 6 memos");
        return -1;
    }
    PyTypeObject *ht = (PyTypeObject *)htype;
    PyObject *d = PyType_IsSubtype(ht, &PyList_Type) ? _PyType_Lookup(ht, S_content_length) : NULL;
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
        ((PyMemberDescrObject *)d)->d_member->offset < (Py_ssize_t)sizeof(PyListObject) ||
        ((PyMemberDescrObject *)d)->d_member->offset + (Py_ssize_t)sizeof(PyObject *) > ht->tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "Redact: Headers must be a list subclass with a content_length slot");
        return -1;
    }
    self->clen_off = ((PyMemberDescrObject *)d)->d_member->offset;
    for (int c = 0; c < N_CLASSES; c++) {
        PyObject *m = PyTuple_GET_ITEM(values, c);
        if (m != Py_None && !PyDict_CheckExact(m)) {
            PyErr_SetString(PyExc_TypeError, "Redact: memos must be dicts or None");
            return -1;
        }
        Py_XSETREF(self->memos[c], m == Py_None ? NULL : Py_NewRef(m));
    }
    if (self->memos[C_WHOLE] != markers || self->memos[C_AUTH] == NULL || self->memos[C_COOKIE] == NULL ||
        self->memos[C_SET_COOKIE] == NULL) {
        PyErr_SetString(PyExc_ValueError, "Redact: the memo of whole values must be the markers' one");
        return -1;
    }
    Py_XSETREF(self->codes, Py_NewRef(codes));
    Py_XSETREF(self->markers, Py_NewRef(markers));
    Py_XSETREF(self->params, Py_NewRef(params));
    Py_XSETREF(self->headers_type, (PyTypeObject *)Py_NewRef(htype));
    self->memo_max = memo_max < 1 ? 1 : memo_max;
    for (int i = 0; i < NAME_SLOTS; i++)  /* (a second __init__: other codes, other memos) */
        Py_CLEAR(self->names[i]);
    for (int c = 0; c < N_CLASSES; c++)
        for (int i = 0; i < FRONT_SLOTS; i++)
            Py_CLEAR(self->front_v[c][i]);
    self->show = show;
    return 0;
}

static void Redact_dealloc(RedactObject *self) {
    Py_XDECREF(self->codes);
    Py_XDECREF(self->markers);
    Py_XDECREF(self->params);
    Py_XDECREF(self->headers_type);
    for (int c = 0; c < N_CLASSES; c++)
        Py_XDECREF(self->memos[c]);
    for (int i = 0; i < NAME_SLOTS; i++)
        Py_XDECREF(self->names[i]);
    for (int c = 0; c < N_CLASSES; c++)
        for (int i = 0; i < FRONT_SLOTS; i++)
            Py_XDECREF(self->front_v[c][i]);
    sha_wipe(self->inner, sizeof(self->inner));
    sha_wipe(self->outer, sizeof(self->outer));
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Redact_methods[] = {
    {"headers", (PyCFunction)(void (*)(void))Redact_headers, METH_FASTCALL,
     "headers(redactor, headers) -> Redactor.headers(headers), or None (declined: use the Python code)"},
    {"hmac", (PyCFunction)Redact_hmac, METH_O, "hmac(data) -> the 32-byte HMAC-SHA256 of data (tests)"},
    {"mark", (PyCFunction)(void (*)(void))Redact_mark, METH_FASTCALL,
     "mark(secret, remember) -> its marker (remember: through the markers' memo)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RedactType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._recfast.Redact",
    .tp_basicsize = sizeof(RedactObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A Redactor's C side (see the module's docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Redact_init,
    .tp_dealloc = (destructor)Redact_dealloc,
    .tp_methods = Redact_methods,
};

