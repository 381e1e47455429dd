/* Part of hdrlog._recfast (included by _recfast.c only): a Redactor's C side (the Redact object's state), its
 * markers (HMAC-SHA256 from the pad states, memoised as Redactor.value does) and the redaction of one secret header
 * value (Redactor._redact). The Redact type itself and Redactor.headers: _recfast_redact.h. */

/* ------------------------------------------------------------------------------------------ Redact */

#define NAME_SLOTS 251
#define FRONT_SLOTS 64
typedef struct {
    PyObject_HEAD
    uint32_t inner[8], outer[8];  /* SHA-256 states after the key block xor ipad / opad */
    PyObject *codes;               /* Redactor._codes: header name -> class */
    PyObject *memos[N_CLASSES];    /* Redactor._values (NULL where None); memos[C_WHOLE] is markers */
    PyObject *markers;             /* Redactor._markers: hash(secret) -> marker */
    PyObject *params;              /* Redactor._params: query parameter name -> secret? */
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
