/* hdrlog._statsfast: C fast path of the end-of-run statistics observer (hdrlog.stats).
 *
 * Empty for now: the Python side uses what this module provides only when it has it (getattr), and runs its
 * own code otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_statsfast", "C fast path of the end-of-run statistics observer (hdrlog.stats).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__statsfast(void) { return PyModule_Create(&module); }
