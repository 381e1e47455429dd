/* hdrlog._ringfast: C fast path of the ring buffer reader (hdrlog.ringbuf).
 *
 * Empty for now: the Python side uses what this module provides only when it has it (getattr), and runs its
 * own code otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ringfast", "C fast path of the ring buffer reader (hdrlog.ringbuf).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ringfast(void) { return PyModule_Create(&module); }
