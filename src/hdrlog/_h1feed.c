/* hdrlog._h1feed: C fast path of HTTP/1 connection feeding (hdrlog.conntrack, hdrlog.http1).
 *
 * Empty for now: the Python side uses what this module provides only when it has it (getattr), and runs its
 * own code otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h1feed", "C fast path of HTTP/1 connection feeding (hdrlog.conntrack, hdrlog.http1).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h1feed(void) { return PyModule_Create(&module); }
