/* hdrlog._h1fast: one HTTP/1.x message head parsed in one call, for hdrlog.http1's fast path.
 *
 * parse_head(data, pos, request, limit) looks at data[pos:] (any bytes-like object) and, if it starts with ONE
 * complete head in a strict, conservative grammar, returns
 *
 *   (end, method_or_status, target_or_reason, headers, content_length, host, minor)
 *
 * end: offset just after the blank line; method (str) and request-target (str) for a request, status (int) and
 * reason phrase (str) for a response; headers: list of (name, value) str tuples in wire order, decoded as
 * hdrlog.http1 decodes them (UTF-8, errors "backslashreplace"; a value without its leading SP/HTAB, trailing
 * whitespace kept, as llhttp reports it); content_length: the one Content-Length value, or -1; host: the value of
 * the first Host header (requests) or None; minor: 0 or 1 (HTTP/1.0 or 1.1).
 *
 * Anything else returns None ("not sure: use llhttp"): the head not complete within data[pos:pos+limit], a method
 * outside the table below (CONNECT is not in it), a request-target not starting with "/" or holding a byte outside
 * 0x21-0x7E, not exactly one SP around it, a version other than HTTP/1.0 and 1.1, a status below 200, a byte of a
 * reason phrase or header value that is a control (other than HTAB) or DEL, a header name that is not a token or
 * is followed by anything but ":", a bare CR or LF, an obs-fold, Transfer-Encoding, Upgrade, more than one
 * Content-Length or one that is not 1-18 digits.  Everything accepted is parsed the same by llhttp (as hdrlog sets
 * it up: lenient headers and keep-alive); tests/test_h1fast.py checks that against httptools.
 *
 * Every read is bounds-checked against the end of the buffer (or pos + limit): no byte beyond is ever looked at.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* byte classes */
#define C_TOKEN 1  /* tchar (RFC 9110): header name and method bytes */
#define C_VALUE 2  /* HTAB, SP, VCHAR, obs-text: header value and reason phrase bytes */
#define C_URL 4    /* 0x21-0x7E: request-target bytes */

static unsigned char cls[256];

static void init_classes(void) {
    const char *tspecial = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c != 0 && strchr(tspecial, c) != NULL))
            k |= C_TOKEN;
        if (c == '\t' || (c >= 0x20 && c != 0x7f))
            k |= C_VALUE;
        if (c >= 0x21 && c <= 0x7e)
            k |= C_URL;
        cls[c] = k;
    }
}

/* methods llhttp's request parser accepts with HTTP/1.x, CONNECT excepted (it switches protocols) */
static const char *const method_names[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE",
    "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
    "CHECKOUT", "MERGE", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE",
    "QUERY", NULL,
};
#define N_METHODS (sizeof(method_names) / sizeof(method_names[0]) - 1)
static PyObject *method_str[N_METHODS];
static Py_ssize_t method_len[N_METHODS];

/* Short ASCII strings seen often (header names, reason phrases) -> one str object each: a bounded, direct-mapped
 * memo (a colliding spelling replaces the slot). Saves the allocation, and dict lookups downstream find the str's
 * hash already computed. */
#define MEMO_SLOTS 1024
#define MEMO_MAXLEN 48
static PyObject *memo[MEMO_SLOTS];

static PyObject *memo_str(const unsigned char *s, Py_ssize_t n) {
    if (n == 0 || n > MEMO_MAXLEN) {
        PyObject *u = PyUnicode_New(n, 127);
        if (u != NULL && n)
            memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
        return u;
    }
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    PyObject **slot = &memo[(h ^ (h >> 16)) & (MEMO_SLOTS - 1)];
    PyObject *u = *slot;
    if (u != NULL && PyUnicode_GET_LENGTH(u) == n && memcmp(PyUnicode_1BYTE_DATA(u), s, (size_t)n) == 0) {
        Py_INCREF(u);
        return u;
    }
    u = PyUnicode_New(n, 127);
    if (u == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
    Py_INCREF(u);
    Py_XSETREF(*slot, u);
    return u;
}

/* bytes -> str as hdrlog.http1 decodes them: ASCII copied, anything else through the UTF-8 codec */
static PyObject *decode(const unsigned char *s, Py_ssize_t n, int ascii) {
    if (ascii) {
        PyObject *u = PyUnicode_New(n, 127);
        if (u != NULL && n)
            memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
        return u;
    }
    return PyUnicode_DecodeUTF8((const char *)s, n, "backslashreplace");
}

/* name (a token, so ASCII) equals the lower-case ASCII word w, case-insensitively */
static int name_is(const unsigned char *s, Py_ssize_t n, const char *w, Py_ssize_t wn) {
    if (n != wn)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((unsigned char)(s[i] | 0x20) != (unsigned char)w[i])
            return 0;
    return 1;
}

/* "HTTP/1.x" at s (8 bytes available): the minor version 0 or 1, else -1 */
static int version_at(const unsigned char *s) {
    if (memcmp(s, "HTTP/1.", 7) != 0)
        return -1;
    if (s[7] == '0')
        return 0;
    if (s[7] == '1')
        return 1;
    return -1;
}

/* A parsed head (parse_into), also what the capsule `api` hands to hdrlog._h1feed (which declares the same struct:
 * H1_API_VERSION and the struct's size are checked there). */
typedef struct {
    Py_ssize_t end;                       /* offset just after the blank line */
    PyObject *first, *second, *headers;   /* owned: method (str) or status (int), target or reason, the header list */
    PyObject *host;                       /* borrowed from headers: the first Host value (requests), or NULL */
    long long clen;                       /* the one Content-Length, or -1 */
    int minor, status;                    /* 0 or 1; the status code (responses), else 0 */
    /* borrowed from headers: the LAST Content-Type, Mcp-Session-Id and MCP-Protocol-Version values (what
     * hdrlog.mcp.Mcp reads), or NULL; whether that Content-Type value is ASCII */
    PyObject *ctype, *session, *mversion;
    int ctype_ascii;
} h1_head;

/* The parse proper. On success: *hd filled (first, second and headers owned); returns 1. Not sure: returns 0.
 * Error (memory): -1. */
static int parse_into(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, int request, Py_ssize_t limit,
                      h1_head *hd) {
    Py_ssize_t lim = (limit < len - pos) ? pos + limit : len;
    Py_ssize_t i = pos, j;
    int minor, status = 0;
    PyObject *first = NULL, *second = NULL, *headers = NULL, *host = NULL;
    PyObject *ctype = NULL, *session = NULL, *mversion = NULL;
    int ctype_ascii = 1;
    long long clen = -1;

    if (request) {
        j = i;
        while (j < lim && j - i <= 16 && (cls[buf[j]] & C_TOKEN))
            j++;
        if (j >= lim || buf[j] != ' ')
            return 0;
        for (size_t k = 0; k < N_METHODS; k++) {
            if (method_len[k] == j - i && memcmp(method_names[k], buf + i, (size_t)(j - i)) == 0) {
                first = method_str[k];
                break;
            }
        }
        if (first == NULL)
            return 0;
        i = j + 1;
        if (i >= lim || buf[i] != '/')
            return 0;
        j = i;
        while (j < lim && (cls[buf[j]] & C_URL))
            j++;
        /* j: the SP after the target; then "HTTP/1.x\r\n" */
        if (j >= lim || buf[j] != ' ' || lim - (j + 1) < 10)
            return 0;
        minor = version_at(buf + j + 1);
        if (minor < 0 || buf[j + 9] != '\r' || buf[j + 10] != '\n')
            return 0;
        Py_INCREF(first);
        second = decode(buf + i, j - i, 1);
        if (second == NULL)
            goto error;
        i = j + 11;
    } else {
        /* "HTTP/1.x SP DDD" then SP reason CRLF, or CRLF */
        if (lim - i < 14)
            return 0;
        minor = version_at(buf + i);
        if (minor < 0 || buf[i + 8] != ' ')
            return 0;
        const unsigned char *d = buf + i + 9;
        if (d[0] < '2' || d[0] > '9' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9')
            return 0;
        status = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
        i += 12;
        Py_ssize_t rs = i, re;
        int ascii = 1;
        if (buf[i] == ' ') {
            rs = ++i;
            while (i < lim && (cls[buf[i]] & C_VALUE)) {
                ascii &= buf[i] < 0x80;
                i++;
            }
        }
        re = i;
        if (lim - i < 2 || buf[i] != '\r' || buf[i + 1] != '\n')
            return 0;
        i += 2;
        first = PyLong_FromLong(status);
        if (first == NULL)
            return -1;
        second = ascii ? memo_str(buf + rs, re - rs) : decode(buf + rs, re - rs, 0);
        if (second == NULL)
            goto error;
    }

    headers = PyList_New(0);
    if (headers == NULL)
        goto error;
    for (;;) {
        if (i >= lim)
            goto notsure;
        if (buf[i] == '\r') {  /* the blank line */
            if (i + 1 >= lim || buf[i + 1] != '\n')
                goto notsure;
            i += 2;
            break;
        }
        Py_ssize_t ns = i;
        while (i < lim && (cls[buf[i]] & C_TOKEN))
            i++;
        if (i == ns || i >= lim || buf[i] != ':')
            goto notsure;
        Py_ssize_t ne = i++;
        while (i < lim && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        Py_ssize_t vs = i;
        int ascii = 1;
        while (i < lim && (cls[buf[i]] & C_VALUE)) {
            ascii &= buf[i] < 0x80;
            i++;
        }
        Py_ssize_t ve = i;
        if (lim - i < 2 || buf[i] != '\r' || buf[i + 1] != '\n')
            goto notsure;
        i += 2;

        const unsigned char *nm = buf + ns;
        Py_ssize_t nl = ne - ns;
        int is_host = 0, mcp_class = 0;  /* 1 Content-Type, 2 Mcp-Session-Id, 3 MCP-Protocol-Version */
        switch (nl) {
        case 4:
            is_host = request && host == NULL && name_is(nm, nl, "host", 4);
            break;
        case 7:
            if (name_is(nm, nl, "upgrade", 7))
                goto notsure;
            break;
        case 12:
            if (name_is(nm, nl, "content-type", 12))
                mcp_class = 1;
            break;
        case 20:
            if (name_is(nm, nl, "mcp-protocol-version", 20))
                mcp_class = 3;
            break;
        case 14:
            if (name_is(nm, nl, "mcp-session-id", 14)) {
                mcp_class = 2;
            } else if (name_is(nm, nl, "content-length", 14)) {
                if (clen >= 0 || ve == vs || ve - vs > 18)
                    goto notsure;
                clen = 0;
                for (Py_ssize_t k = vs; k < ve; k++) {
                    if (buf[k] < '0' || buf[k] > '9')
                        goto notsure;
                    clen = clen * 10 + (buf[k] - '0');
                }
            }
            break;
        case 17:
            if (name_is(nm, nl, "transfer-encoding", 17))
                goto notsure;
            break;
        }
        PyObject *name = memo_str(nm, nl);
        if (name == NULL)
            goto error;
        PyObject *value = decode(buf + vs, ve - vs, ascii);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        if (is_host)
            host = value;  /* borrowed from the pair, which the list keeps */
        if (mcp_class == 1) {
            ctype = value;
            ctype_ascii = ascii;
        } else if (mcp_class == 2) {
            session = value;
        } else if (mcp_class == 3) {
            mversion = value;
        }
        int rc = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (rc < 0)
            goto error;
    }

    hd->end = i;
    hd->first = first;
    hd->second = second;
    hd->headers = headers;
    hd->host = host;
    hd->clen = clen;
    hd->minor = minor;
    hd->status = status;
    hd->ctype = ctype;
    hd->session = session;
    hd->mversion = mversion;
    hd->ctype_ascii = ctype_ascii;
    return 1;

notsure:
    Py_XDECREF(first);
    Py_XDECREF(second);
    Py_XDECREF(headers);
    return 0;
error:
    Py_XDECREF(first);
    Py_XDECREF(second);
    Py_XDECREF(headers);
    return -1;
}

/* parse_into's result as parse_head's 7-tuple (the references in hd are given to it, or released) */
static int parse(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, int request, Py_ssize_t limit,
                 PyObject **out) {
    h1_head hd;
    int rc = parse_into(buf, len, pos, request, limit, &hd);
    if (rc != 1)
        return rc;
    PyObject *res = PyTuple_New(7);
    PyObject *o_end = PyLong_FromSsize_t(hd.end), *o_cl = PyLong_FromLongLong(hd.clen);
    PyObject *o_minor = PyLong_FromLong(hd.minor);
    if (res == NULL || o_end == NULL || o_cl == NULL || o_minor == NULL) {
        Py_XDECREF(res);
        Py_XDECREF(o_end);
        Py_XDECREF(o_cl);
        Py_XDECREF(o_minor);
        Py_DECREF(hd.first);
        Py_DECREF(hd.second);
        Py_DECREF(hd.headers);
        return -1;
    }
    PyObject *host = hd.host != NULL ? hd.host : Py_None;
    Py_INCREF(host);
    PyTuple_SET_ITEM(res, 0, o_end);
    PyTuple_SET_ITEM(res, 1, hd.first);
    PyTuple_SET_ITEM(res, 2, hd.second);
    PyTuple_SET_ITEM(res, 3, hd.headers);
    PyTuple_SET_ITEM(res, 4, o_cl);
    PyTuple_SET_ITEM(res, 5, host);
    PyTuple_SET_ITEM(res, 6, o_minor);
    *out = res;
    return 1;
}

static PyObject *parse_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_head(data, pos, request, limit) takes 4 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    int request = PyObject_IsTrue(args[2]);
    if (request < 0)
        return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return NULL;
    }
    PyObject *data = args[0], *out = NULL;
    Py_buffer view;
    const unsigned char *buf;
    Py_ssize_t len;
    int have_view = 0;
    if (PyBytes_CheckExact(data)) {
        buf = (const unsigned char *)PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        have_view = 1;
        buf = (const unsigned char *)view.buf;
        len = view.len;
    }
    int rc = 0;
    if (pos < 0 || pos > len)
        PyErr_SetString(PyExc_ValueError, "pos out of range");
    else if (pos < len)
        rc = parse(buf, len, pos, request, limit, &out);
    if (have_view)
        PyBuffer_Release(&view);
    if (PyErr_Occurred())
        return NULL;
    if (rc == 1)
        return out;
    Py_RETURN_NONE;
}

/* decode_event(raw, wall_offset_ns, Event, addr_cache, comm_cache): hdrlog.events.decode's common case in one call.
 *
 * raw: one ring-buffer record (struct hdrlog_event of probes/hdrlog.h, little-endian, 104 bytes, then the data).
 * Returns Event(ts + wall_offset_ns, conn, pid, tid, len, offset, lost, kind, fn, dir, attr, local, peer, comm,
 * fd, data) built exactly as the Python decode builds it, taking local/peer from addr_cache (keyed by the 40-byte
 * tuple, only when attr is not 0) and comm from comm_cache (keyed by the 16-byte comm), or None when the Python
 * decode must run: a record shorter than its header, a tuple or comm not in its cache yet (the Python side fills
 * the caches), a timestamp sum outside 64 bits.  tests/test_events.py checks both decode every fixture event, and
 * random records, identically. */
#define EV_HDR 104
#define EV_NFIELDS 16

/* Event (a slots dataclass whose __init__ only assigns its fields in order) is made without running that __init__:
 * allocated as object.__new__ would (tp_alloc) and its 16 slots filled at the offsets of their member descriptors,
 * ~0.2 µs less per event. ev_slots finds them once per type; a type that does not look so (a field missing, not an
 * object slot, a __post_init__) is called instead. */
static const char *const ev_names[EV_NFIELDS] = {"ts_ns", "conn", "pid", "tid", "length", "offset", "lost", "kind",
                                                  "fn", "dir", "attr", "local", "peer", "comm", "fd", "data"};
static PyTypeObject *ev_type;    /* the type ev_off describes (a strong reference), or NULL */
static int ev_direct;            /* 1: fill its slots directly, 0: call it */
static Py_ssize_t ev_off[EV_NFIELDS];

static void ev_slots(PyObject *type) {
    Py_XDECREF(ev_type);
    Py_INCREF(type);
    ev_type = (PyTypeObject *)type;
    ev_direct = 0;
    if (!PyType_Check(type) || ev_type->tp_alloc == NULL || ev_type->tp_dict == NULL)
        return;
    if (PyDict_GetItemString(ev_type->tp_dict, "__post_init__") != NULL || ev_type->tp_itemsize != 0)
        return;
    for (int k = 0; k < EV_NFIELDS; k++) {
        PyObject *d = PyDict_GetItemString(ev_type->tp_dict, ev_names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type))
            return;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject) ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > ev_type->tp_basicsize)
            return;
        ev_off[k] = m->offset;
    }
    ev_direct = 1;
}

static PyObject *ev_make(PyObject *type, PyObject **fields) {
    if ((PyTypeObject *)type != ev_type)
        ev_slots(type);
    if (!ev_direct)
        return PyObject_Vectorcall(type, fields, EV_NFIELDS, NULL);
    PyObject *ev = ev_type->tp_alloc(ev_type, 0);
    if (ev == NULL)
        return NULL;
    for (int k = 0; k < EV_NFIELDS; k++) {
        Py_INCREF(fields[k]);
        *(PyObject **)((char *)ev + ev_off[k]) = fields[k];
    }
    return ev;
}
static PyObject *decode_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_event(raw, wall_offset_ns, Event, addr_cache, comm_cache) takes 5 arguments");
        return NULL;
    }
    PyObject *addr_cache = args[3], *comm_cache = args[4];
    if (!PyDict_CheckExact(addr_cache) || !PyDict_CheckExact(comm_cache)) {
        PyErr_SetString(PyExc_TypeError, "decode_event: the caches must be dicts");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[1]);
    if (off == -1 && PyErr_Occurred()) {
        PyErr_Clear();  /* not a 64-bit int: the Python decode adds it */
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();  /* not a contiguous buffer: the Python decode says what is wrong */
        Py_RETURN_NONE;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *res = NULL, *ev_args[16] = {0};
    int k;
    if (n < EV_HDR)
        goto none;
    unsigned long long ts, conn;
    uint32_t u32[6];  /* pid, tid, len, cap, offset, lost */
    int32_t fd;
    memcpy(&ts, b, 8);
    memcpy(&conn, b + 8, 8);
    memcpy(u32, b + 16, 24);
    memcpy(&fd, b + 100, 4);
#if PY_BIG_ENDIAN
#error "hdrlog events are little-endian; decode_event reads them natively"
#endif
    __int128 wall = (__int128)ts + off;
    if (wall < 0 || wall > (__int128)UINT64_MAX)
        goto none;
    PyObject *local = Py_None, *peer = Py_None, *comm;
    unsigned attr = b[43];
    if (attr) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)b + 44, 40);
        if (key == NULL)
            goto error;
        PyObject *pair = PyDict_GetItemWithError(addr_cache, key);
        Py_DECREF(key);
        if (pair == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto none;
        }
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto none;
        local = PyTuple_GET_ITEM(pair, 0);
        peer = PyTuple_GET_ITEM(pair, 1);
    }
    {
        PyObject *key = PyBytes_FromStringAndSize((const char *)b + 84, 16);
        if (key == NULL)
            goto error;
        comm = PyDict_GetItemWithError(comm_cache, key);
        Py_DECREF(key);
        if (comm == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto none;
        }
        /* the Python decode's `_comm_cache.get(comm) or _comm(comm)`: an empty cached name is computed again (the
         * same empty string, so the result is the same: taking the cached one is exact) */
    }
    Py_ssize_t cap = u32[3], avail = n - EV_HDR;
    if (cap > avail)
        cap = avail;
    ev_args[0] = PyLong_FromUnsignedLongLong((unsigned long long)wall);
    ev_args[1] = PyLong_FromUnsignedLongLong(conn);
    ev_args[2] = PyLong_FromUnsignedLong(u32[0]);
    ev_args[3] = PyLong_FromUnsignedLong(u32[1]);
    ev_args[4] = PyLong_FromUnsignedLong(u32[2]);
    ev_args[5] = PyLong_FromUnsignedLong(u32[4]);
    ev_args[6] = PyLong_FromUnsignedLong(u32[5]);
    ev_args[7] = PyLong_FromLong(b[40]);
    ev_args[8] = PyLong_FromLong(b[41]);
    ev_args[9] = PyLong_FromLong(b[42]);
    ev_args[10] = PyLong_FromLong(attr);
    Py_INCREF(local);
    ev_args[11] = local;
    Py_INCREF(peer);
    ev_args[12] = peer;
    Py_INCREF(comm);
    ev_args[13] = comm;
    ev_args[14] = PyLong_FromLong(fd);
    ev_args[15] = PyBytes_FromStringAndSize((const char *)b + EV_HDR, cap);
    for (k = 0; k < 16; k++)
        if (ev_args[k] == NULL)
            goto error;
    res = ev_make(args[2], ev_args);
    goto done;
none:
    res = Py_None;
    Py_INCREF(res);
    goto done;
error:
    res = NULL;
done:
    for (k = 0; k < 16; k++)
        Py_XDECREF(ev_args[k]);
    PyBuffer_Release(&view);
    return res;
}

/* what hdrlog._h1feed calls (the capsule `api`): the head parser without a tuple built */
#define H1_API_VERSION 1
typedef struct {
    int version;
    size_t head_size;
    int (*parse_into)(const unsigned char *, Py_ssize_t, Py_ssize_t, int, Py_ssize_t, h1_head *);
} h1_api_t;
static const h1_api_t h1_api = {H1_API_VERSION, sizeof(h1_head), parse_into};

static PyMethodDef methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "parse_head(data, pos, request, limit) -> (end, method|status, target|reason, headers, content_length, "
     "host, minor) or None (not sure: use llhttp). See the module source for the grammar."},
    {"decode_event", (PyCFunction)(void (*)(void))decode_event, METH_FASTCALL,
     "decode_event(raw, wall_offset_ns, Event, addr_cache, comm_cache) -> Event or None (use hdrlog.events' "
     "Python decode). See the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h1fast", "One HTTP/1.x message head parsed in one call (hdrlog.http1's fast path).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__h1fast(void) {
    init_classes();
    for (size_t k = 0; k < N_METHODS; k++) {
        if (method_str[k] == NULL) {
            method_str[k] = PyUnicode_InternFromString(method_names[k]);
            if (method_str[k] == NULL)
                return NULL;
        }
        method_len[k] = (Py_ssize_t)strlen(method_names[k]);
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *cap = PyCapsule_New((void *)&h1_api, "hdrlog._h1fast.api", NULL);
    if (cap == NULL || PyModule_AddObject(m, "api", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
