/* The output chain of hdrlog._statsfast: JsonlWriter (sinks.JsonlSink.write) and Chain (output.OutputSink.write
 * without a filter), which calls an Acc's observe and a JsonlWriter's write in C. Included by _statsfast.c only,
 * after the Acc type. */

/* ------------------------------------------------------------------------------------ JsonlWriter */

typedef struct {
    PyObject_HEAD
    PyObject *fwrite, *dumps, *option;
    long long written;
} Writer;

static PyTypeObject WriterType;

static int writer_traverse(Writer *w, visitproc visit, void *arg) {
    Py_VISIT(w->fwrite);
    Py_VISIT(w->dumps);
    Py_VISIT(w->option);
    return 0;
}

static int writer_clear(Writer *w) {
    Py_CLEAR(w->fwrite);
    Py_CLEAR(w->dumps);
    Py_CLEAR(w->option);
    return 0;
}

static void writer_dealloc(Writer *w) {
    PyObject_GC_UnTrack(w);
    writer_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *writer_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *fwrite, *dumps, *option;
    if (!PyArg_ParseTuple(args, "OOO:JsonlWriter", &fwrite, &dumps, &option))
        return NULL;
    Writer *w = (Writer *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    Py_INCREF(fwrite);
    w->fwrite = fwrite;
    Py_INCREF(dumps);
    w->dumps = dumps;
    Py_INCREF(option);
    w->option = option;
    return (PyObject *)w;
}

static int writer_write_c(Writer *w, PyObject *rec) {
    if (w->fwrite == NULL) {
        PyErr_SetString(PyExc_ValueError, "JsonlWriter cleared");
        return -1;
    }
    PyObject *args[2] = {rec, w->option};
    PyObject *data = PyObject_Vectorcall(w->dumps, args, 1, s_kwnames);
    if (data == NULL)
        return -1;
    PyObject *r = PyObject_Vectorcall(w->fwrite, &data, 1, NULL);
    Py_DECREF(data);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    w->written++;
    return 0;
}

static PyObject *writer_write(Writer *w, PyObject *rec) {
    if (writer_write_c(w, rec) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef writer_methods[] = {
    {"write", (PyCFunction)writer_write, METH_O, "write(rec): write(dumps(rec, option=option)), counted"},
    {NULL}};

static PyMemberDef writer_members[] = {
    {"written", T_LONGLONG, offsetof(Writer, written), 0, "records written"},
    {NULL}};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._statsfast.JsonlWriter",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "JsonlSink.write's C path: JsonlWriter(file.write, orjson.dumps, option)",
    .tp_new = writer_new,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_methods = writer_methods,
    .tp_members = writer_members,
};

/* ------------------------------------------------------------------------------------------ Chain */

typedef struct {
    PyObject_HEAD
    PyObject *observers; /* tuple of callables */
    PyObject *inner;     /* callable */
    long long written;
} Chain;

static PyTypeObject ChainType;

/* the C object behind a bound C method of ours (acc.observe, writer.write), else NULL */
static PyObject *bound_self(PyObject *f, PyTypeObject *type, void *meth) {
    if (!PyCFunction_Check(f) || PyCFunction_GET_FUNCTION(f) != (PyCFunction)meth)
        return NULL;
    PyObject *self = PyCFunction_GET_SELF(f);
    return self != NULL && Py_IS_TYPE(self, type) ? self : NULL;
}

static int chain_traverse(Chain *c, visitproc visit, void *arg) {
    Py_VISIT(c->observers);
    Py_VISIT(c->inner);
    return 0;
}

static int chain_clear(Chain *c) {
    Py_CLEAR(c->observers);
    Py_CLEAR(c->inner);
    return 0;
}

static void chain_dealloc(Chain *c) {
    PyObject_GC_UnTrack(c);
    chain_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *chain_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *observers, *inner;
    if (!PyArg_ParseTuple(args, "O!O:Chain", &PyTuple_Type, &observers, &inner))
        return NULL;
    Chain *c = (Chain *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    Py_INCREF(observers);
    c->observers = observers;
    Py_INCREF(inner);
    c->inner = inner;
    return (PyObject *)c;
}

static PyObject *chain_write(Chain *c, PyObject *rec) {
    if (c->observers == NULL) {
        PyErr_SetString(PyExc_ValueError, "Chain cleared");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(c->observers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(c->observers, i);
        PyObject *acc = bound_self(f, &AccType, (void *)acc_observe);
        PyObject *r = acc != NULL ? acc_observe((Acc *)acc, rec) : PyObject_Vectorcall(f, &rec, 1, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    PyObject *w = bound_self(c->inner, &WriterType, (void *)writer_write);
    if (w != NULL) {
        if (writer_write_c((Writer *)w, rec) < 0)
            return NULL;
    } else {
        PyObject *r = PyObject_Vectorcall(c->inner, &rec, 1, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    c->written++;
    Py_RETURN_NONE;
}

static PyMethodDef chain_methods[] = {
    {"write", (PyCFunction)chain_write, METH_O, "write(rec): every observer, then the inner sink; counted"},
    {NULL}};

static PyMemberDef chain_members[] = {
    {"written", T_LONGLONG, offsetof(Chain, written), 0, "records written"},
    {NULL}};

static PyTypeObject ChainType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hdrlog._statsfast.Chain",
    .tp_basicsize = sizeof(Chain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "OutputSink.write's C path without a filter: Chain((observe, ...), inner_write)",
    .tp_new = chain_new,
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_traverse = (traverseproc)chain_traverse,
    .tp_clear = (inquiry)chain_clear,
    .tp_methods = chain_methods,
    .tp_members = chain_members,
};
