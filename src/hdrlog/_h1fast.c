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
 *
 * This file holds the byte classes, the method table, the string memo, the decoders and the module with its
 * capsule `api`; the rest is in headers of static functions included below: _h1fast_head.h (the head parser and
 * parse_head) and _h1fast_event.h (decode_event).
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

#include "_h1fast_head.h"

#include "_h1fast_event.h"

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
