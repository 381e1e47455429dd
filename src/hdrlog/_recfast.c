/* hdrlog._recfast: C fast path of records and redaction (hdrlog.records, hdrlog.redact).
 *
 * Empty for now: the Python side uses what this module provides only when it has it (getattr), and runs its
 * own code otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_recfast", "C fast path of records and redaction (hdrlog.records, hdrlog.redact).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__recfast(void) { return PyModule_Create(&module); }
