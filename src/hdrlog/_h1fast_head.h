/* The HTTP/1.x head parser of hdrlog._h1fast: the h1_head struct, parse_into (the strict grammar of the module's
 * docstring, every read bounds-checked), its result as parse_head's 7-tuple, and parse_head itself. Included by
 * _h1fast.c only (which defines the byte classes, the method table, the string memo and the decoders used here),
 * before _h1fast_event.h. */

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
