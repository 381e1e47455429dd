/* The Redact type of hdrlog._recfast (Redactor._fast): markers, the redaction of secret header values and
 * Redactor.headers in C. Included by _recfast.c only (which defines the interned strings used here). */

/* ------------------------------------------------------------------------------------------ Redact */

#define NAME_SLOTS 251
#define FRONT_SLOTS 64
typedef struct {
    PyObject_HEAD
    uint32_t inner[8], outer[8];  /* SHA-256 states after the key block xor ipad / opad */
    PyObject *codes;               /* Redactor._codes: header name -> class */
    PyObject *memos[N_CLASSES];    /* Redactor._values (NULL where None); memos[C_WHOLE] is markers */
    PyObject *markers;             /* Redactor._markers: hash(secret) -> marker */
    PyTypeObject *headers_type;    /* redact.Headers */
    Py_ssize_t clen_off;           /* its content_length slot */
    Py_ssize_t memo_max;
    int show;
    PyObject *names[NAME_SLOTS];  /* header names (held) whose class is name_cls[] (see name_class) */
    Py_hash_t front_h[N_CLASSES][FRONT_SLOTS];   /* in front of each memo: hash -> its value there (see front_get) */
    PyObject *front_v[N_CLASSES][FRONT_SLOTS];
    unsigned char name_cls[NAME_SLOTS];
} RedactObject;

static PyTypeObject RedactType;

/* A few of each memo's entries (hash -> redacted value or marker, the value the memo holds for that hash), looked up
 * by the hash's low bits without making an int of it and looking it up in the dict (~0.04 µs a secret header). Like
 * the memos they hold no plaintext; a value is found here only if the memo had it for the same hash. */
#define front_get(r, c, h) \
    ((r)->front_v[c][(size_t)(h) % FRONT_SLOTS] != NULL && (r)->front_h[c][(size_t)(h) % FRONT_SLOTS] == (h) \
         ? (r)->front_v[c][(size_t)(h) % FRONT_SLOTS] : NULL)

static void front_put(RedactObject *r, int c, Py_hash_t h, PyObject *v) {
    size_t i = (size_t)h % FRONT_SLOTS;
    Py_INCREF(v);
    Py_XSETREF(r->front_v[c][i], v);
    r->front_h[c][i] = h;
}
static PyObject *class_int[N_CLASSES];  /* the ints 0..5 */

static uint32_t hmac_digest(RedactObject *r, const unsigned char *p, size_t n, unsigned char d[32]) {
    uint32_t st[8];
    memcpy(st, r->inner, sizeof(st));
    sha_finish(sha_blocks, st, 64, p, n, d);
    memcpy(st, r->outer, sizeof(st));
    sha_finish(sha_blocks, st, 64, d, 32, d);
    return st[0];
}

/* "<redacted:XXXXXXXX>" for code points [a, b) of str u: HMAC of their UTF-8 ("surrogatepass", as redact.py
 * encodes). remember: looked up in and added to markers by hash, as Redactor.value / _mark do. */
static PyObject *marker_of(RedactObject *r, PyObject *u, Py_ssize_t a, Py_ssize_t b, int remember) {
    int kind = PyUnicode_KIND(u);
    const void *data = PyUnicode_DATA(u);
    PyObject *sub = NULL, *key = NULL, *m = NULL;
    if (kind != PyUnicode_1BYTE_KIND || (!PyUnicode_IS_ASCII(u) && !(a == 0 && b == PyUnicode_GET_LENGTH(u)))) {
        sub = PyUnicode_Substring(u, a, b);  /* its hash (the canonical form's) and its UTF-8 need the object */
        if (sub == NULL)
            return NULL;
    }
    if (remember) {
        Py_hash_t h;
        if (sub != NULL)
            h = PyObject_Hash(sub);
        else if (a == 0 && b == PyUnicode_GET_LENGTH(u))
            h = PyObject_Hash(u);
        else  /* a 1-byte-kind str's substring is one too: str's hash of those bytes */
            h = _Py_HashBytes((const char *)data + a, b - a);
        if (h == -1)
            goto done;
        if ((m = front_get(r, C_WHOLE, h)) != NULL) {
            Py_INCREF(m);
            goto done;
        }
        if ((key = PyLong_FromSsize_t(h)) == NULL)
            goto done;
        m = PyDict_GetItemWithError(r->markers, key);
        if (m != NULL) {
            Py_INCREF(m);
            front_put(r, C_WHOLE, h, m);
            goto done;
        }
        if (PyErr_Occurred())
            goto done;
    }
    unsigned char d[32];
    uint32_t w;
    if (sub == NULL && PyUnicode_IS_ASCII(u)) {
        w = hmac_digest(r, (const unsigned char *)data + a, (size_t)(b - a), d);
    } else {
        PyObject *enc = PyUnicode_AsEncodedString(sub != NULL ? sub : u, "utf-8", "surrogatepass");
        if (enc == NULL)
            goto done;
        w = hmac_digest(r, (const unsigned char *)PyBytes_AS_STRING(enc), (size_t)PyBytes_GET_SIZE(enc), d);
        Py_DECREF(enc);
    }
    sha_wipe(d, sizeof(d));
    m = PyUnicode_New(19, 127);
    if (m == NULL)
        goto done;
    Py_UCS1 *s = PyUnicode_1BYTE_DATA(m);
    memcpy(s, "<redacted:", 10);
    for (int i = 0; i < 8; i++)
        s[10 + i] = (Py_UCS1) "0123456789abcdef"[(w >> (28 - 4 * i)) & 15];
    s[18] = '>';
    if (remember) {
        if (PyDict_GET_SIZE(r->markers) >= r->memo_max)
            PyDict_Clear(r->markers);
        if (PyDict_SetItem(r->markers, key, m) < 0)
            Py_CLEAR(m);
        else
            front_put(r, C_WHOLE, PyLong_AsSsize_t(key), m);
    }
done:
    Py_XDECREF(sub);
    Py_XDECREF(key);
    return m;
}

static int is_space_at(int kind, const void *data, Py_ssize_t i) {
    return Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i));
}

/* A redacted value being built: the characters of an ASCII value in a byte buffer (markers are ASCII too: the
 * result is made in one go), any other in a _PyUnicodeWriter. Only the parts kept as sent (cookie names, attributes,
 * a scheme) and markers are written into it, never a secret. Functions: 0 ok, -1 error. */
typedef struct {
    PyObject *u;  /* the value */
    int ascii;
    char *p;
    Py_ssize_t n, cap;
    char small[256];
    _PyUnicodeWriter w;
} Out;

static void out_init(Out *o, PyObject *u) {
    o->u = u;
    o->ascii = PyUnicode_IS_ASCII(u);
    o->p = o->small;
    o->n = 0;
    o->cap = sizeof(o->small);
    if (!o->ascii)
        _PyUnicodeWriter_Init(&o->w);
}

static int out_bytes(Out *o, const void *s, Py_ssize_t n) {
    if (n > o->cap - o->n) {
        Py_ssize_t cap = o->cap * 2 > o->n + n ? o->cap * 2 : o->n + n;
        char *q = PyMem_Malloc((size_t)cap);
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(q, o->p, (size_t)o->n);
        if (o->p != o->small)
            PyMem_Free(o->p);
        o->p = q;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, (size_t)n);
    o->n += n;
    return 0;
}

static int out_sub(Out *o, Py_ssize_t a, Py_ssize_t b) {  /* characters [a, b) of the value */
    if (a >= b)
        return 0;
    if (o->ascii)
        return out_bytes(o, PyUnicode_1BYTE_DATA(o->u) + a, b - a);
    return _PyUnicodeWriter_WriteSubstring(&o->w, o->u, a, b);
}

static int out_char(Out *o, char c) {
    return o->ascii ? out_bytes(o, &c, 1) : _PyUnicodeWriter_WriteChar(&o->w, (Py_UCS4)c);
}

static int out_marker(Out *o, RedactObject *r, Py_ssize_t a, Py_ssize_t b, int remember) {
    PyObject *m = marker_of(r, o->u, a, b, remember);
    if (m == NULL)
        return -1;
    int rc = o->ascii ? out_bytes(o, PyUnicode_1BYTE_DATA(m), PyUnicode_GET_LENGTH(m)) : _PyUnicodeWriter_WriteStr(&o->w, m);
    Py_DECREF(m);
    return rc;
}

static void out_free(Out *o) {
    if (o->p != o->small)
        PyMem_Free(o->p);
    if (!o->ascii)
        _PyUnicodeWriter_Dealloc(&o->w);
}

static PyObject *out_finish(Out *o) {
    if (!o->ascii)
        return _PyUnicodeWriter_Finish(&o->w);
    PyObject *s = PyUnicode_New(o->n, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), o->p, (size_t)o->n);
    out_free(o);
    return s;
}

/* Redactor._redact: the redacted value of a non-empty str v of class c when its memo missed, remembered there. */
static PyObject *redact_value(RedactObject *r, PyObject *redactor, int c, PyObject *v, PyObject *hkey) {
    if (c == C_WHOLE)
        return marker_of(r, v, 0, PyUnicode_GET_LENGTH(v), 1);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    PyObject *res = NULL;
    Out w;
    out_init(&w, v);
    if (c == C_COOKIE) {
        /* items split on ";", each value (after its first "=") marked, an item without "=" marked whole (after the
         * whitespace following its ";"), an item of whitespace only kept */
        Py_ssize_t start = 0;
        for (int i = 0;; i++) {
            Py_ssize_t end = PyUnicode_FindChar(v, ';', start, n, 1);
            if (end == -2)
                goto fail;
            if (end < 0)
                end = n;
            Py_ssize_t eq = PyUnicode_FindChar(v, '=', start, end, 1);
            if (eq == -2)
                goto fail;
            if (eq >= 0) {
                if (eq + 1 < end) {
                    if (out_sub(&w, start, eq + 1) < 0 || out_marker(&w, r, eq + 1, end, 1) < 0)
                        goto fail;
                } else if (out_sub(&w, start, end) < 0) {
                    goto fail;
                }
            } else {
                Py_ssize_t s = start;
                while (s < end && is_space_at(kind, data, s))
                    s++;
                if (s < end) {  /* item.strip() is not empty */
                    if (i == 0)
                        s = start;
                    if (out_sub(&w, start, s) < 0 || out_marker(&w, r, s, end, 1) < 0)
                        goto fail;
                } else if (out_sub(&w, start, end) < 0) {
                    goto fail;
                }
            }
            if (end >= n)
                break;
            if (out_char(&w, ';') < 0)
                goto fail;
            start = end + 1;
        }
    } else if (c == C_SET_COOKIE) {
        /* the first item is the cookie; its attributes are kept as sent */
        Py_ssize_t end = PyUnicode_FindChar(v, ';', 0, n, 1);
        if (end == -2)
            goto fail;
        if (end < 0)
            end = n;
        Py_ssize_t eq = PyUnicode_FindChar(v, '=', 0, end, 1);
        if (eq == -2)
            goto fail;
        if (eq >= 0) {
            if (eq + 1 < end) {
                if (out_sub(&w, 0, eq + 1) < 0 || out_marker(&w, r, eq + 1, end, 0) < 0 || out_sub(&w, end, n) < 0)
                    goto fail;
            } else if (out_sub(&w, 0, n) < 0) {
                goto fail;
            }
        } else {
            Py_ssize_t s = 0;
            while (s < end && is_space_at(kind, data, s))
                s++;
            if (s < end) {
                if (out_marker(&w, r, 0, end, 0) < 0 || out_sub(&w, end, n) < 0)
                    goto fail;
            } else if (out_sub(&w, 0, n) < 0) {
                goto fail;
            }
        }
    } else if (c == C_AUTH) {
        /* "<Scheme> <credentials>" (redact._SCHEME_SP: [A-Za-z]{2,20} (?=\S)); any other form: _authorization */
        Py_ssize_t l = 0;
        while (l < n && l <= 20) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, l);
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')))
                break;
            l++;
        }
        if (l >= 2 && l <= 20 && l + 1 < n && PyUnicode_READ(kind, data, l) == ' ' && !is_space_at(kind, data, l + 1)) {
            if (out_sub(&w, 0, l + 1) < 0 || out_marker(&w, r, l + 1, n, 0) < 0)
                goto fail;
        } else {
            out_free(&w);
            res = PyObject_CallMethodOneArg(redactor, S_authorization, v);
            if (res == NULL)
                return NULL;
            goto remember;
        }
    } else {
        PyErr_SetString(PyExc_SystemError, "_recfast: unknown header class");
        goto fail;
    }
    res = out_finish(&w);
    if (res == NULL)
        return NULL;
remember:;
    PyObject *memo = r->memos[c];
    if (PyDict_GET_SIZE(memo) >= r->memo_max)
        PyDict_Clear(memo);
    if (PyDict_SetItem(memo, hkey, res) < 0)
        Py_CLEAR(res);
    return res;
fail:
    out_free(&w);
    return NULL;
}

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
    PyObject *codes, *values, *markers, *htype;
    Py_ssize_t memo_max;
    int show;
    if (!PyArg_ParseTuple(args, "y*O!O!O!npO!:Redact", &kb, &PyDict_Type, &codes, &PyTuple_Type, &values,
                          &PyDict_Type, &markers, &memo_max, &show, &PyType_Type, &htype))
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

