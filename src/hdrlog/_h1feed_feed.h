/* Feeder.feed of hdrlog._h1feed (Http1Parser.feed's common case for one chunk: the checks that decide whether
 * the chunk is taken, a body continued, a fast head and its body) and the Feeder type. Included by _h1feed.c only,
 * after _h1feed_call.h. */

/* Feeder.feed(parser, data, ts_ns) -> list of messages, or None (nothing done: Http1Parser.feed's Python path) */
static PyObject *feed_impl(Feeder *F, PyObject *p, PyObject *data, PyObject *ts) {
    if (Py_TYPE(p) != F->ptype || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) == 0)
        Py_RETURN_NONE;
    PyObject *state = SLOT(p, F->poff[P_STATE]), *kind = SLOT(p, F->poff[P_KIND]);
    if (!str_is(state, F->s_http) || SLOT(p, F->poff[P_INMSG]) != Py_False)
        Py_RETURN_NONE;
    /* the switches (tests turn them off) */
    PyObject *flag = PyObject_GetAttr((PyObject *)F->ptype, F->s_fast);
    int on = flag == NULL ? -1 : PyObject_IsTrue(flag);
    Py_XDECREF(flag);
    if (on > 0) {
        flag = PyObject_GetAttr((PyObject *)F->ptype, F->s_cfeed);
        on = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    if (on < 0)
        return NULL;
    if (!on)
        Py_RETURN_NONE;
    int req;
    if (str_is(kind, F->s_request))
        req = 1;
    else if (str_is(kind, F->s_response))
        req = 0;
    else
        Py_RETURN_NONE;
    long long fskip, side;
    if (!get_ll(p, F->poff[P_FSKIP], &fskip) || !get_ll(p, F->poff[P_SIDE], &side))
        Py_RETURN_NONE;
    Call c = {F, p, data, NULL, (const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0};
    Py_ssize_t n = c.n;

    if (fskip > 0) {  /* FastHeads._fast_body: the body of a message the fast path took goes on */
        if (side == 0) {
            if (fskip < n)
                Py_RETURN_NONE;
            if (set_slot_ll(p, F->poff[P_FSKIP], fskip - n) < 0)
                return NULL;
            return PyList_New(0);
        }
        long long brem;
        if (side != 3 || !get_ll(p, F->poff[P_BREM], &brem) || brem < n)
            Py_RETURN_NONE;
        c.out = PyList_New(0);
        if (c.out == NULL)
            return NULL;
        if (side_take(&c, 0) < 0)
            goto error;
        if (!get_ll(p, F->poff[P_SIDE], &side) || !get_ll(p, F->poff[P_BREM], &brem)) {
            PyErr_SetString(PyExc_RuntimeError, "_h1feed: _side or _brem is not an int");
            goto error;
        }
        if (set_slot_ll(p, F->poff[P_FSKIP], side ? brem : 0) < 0)
            goto error;
        return c.out;
    }
    if (side != 0 || SLOT(p, F->poff[P_HELD]) != Py_None)
        Py_RETURN_NONE;

    h1_head hd;
    int rc = F->api->parse_into(c.buf, n, 0, req, F->max_head, &hd);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    Py_ssize_t h = hd.end;
    PyObject *msg = NULL, *method = NULL;
    /* FastHeads._fast with end -1: a segment boundary inside the head leaves it to llhttp */
    Py_ssize_t inside;
    if (req)
        inside = find(c.buf, find(c.buf, 0, h, " HTTP/1.", 8) + 1, h, " HTTP/1.", 8);
    else
        inside = find(c.buf, 1, h, "HTTP/1.", 7);
    /* and a message ending before the chunk's end (more in the chunk: segments) is left to Python, as are
     * responses without a Content-Length (a body until close) */
    int take;
    if (req)
        take = h + (hd.clen > 0 ? hd.clen : 0) >= n;
    else if (hd.status == 204 || hd.status == 304)
        take = h == n;
    else
        take = hd.clen >= 0 && h + hd.clen >= n;
    if (inside >= 0 || !take) {
        Py_DECREF(hd.first);
        Py_DECREF(hd.second);
        Py_DECREF(hd.headers);
        Py_RETURN_NONE;
    }
    c.out = PyList_New(0);
    if (c.out == NULL)
        goto head_error;
    msg = make_msg(&c, &hd, req, ts);
    if (msg == NULL)
        goto head_error;
    PyObject *after;
    if (req) {
        method = Py_NewRef(Py_None);
        after = F->after[hd.minor ? 1 : 0];
    } else {
        /* as on_message_begin: response_to(finals) or response_to(), an exception meaning None */
        PyObject *rt = SLOT(p, F->poff[P_RT]), *rts = SLOT(p, F->poff[P_RTSKIP]);
        int skip = rts == NULL ? 0 : PyObject_IsTrue(rts);
        if (rt == NULL)
            PyErr_SetString(PyExc_AttributeError, "_response_to");
        if (skip < 0 || rt == NULL)
            goto head_error;
        if (skip && (method = pairer_method(F, rt, 0)) != NULL) {
            /* read from the Pairer */
        } else if (skip) {
            PyObject *z = PyLong_FromLong(0);
            if (z == NULL)
                goto head_error;
            Py_INCREF(rt);
            method = PyObject_CallOneArg(rt, z);
            Py_DECREF(rt);
            Py_DECREF(z);
        } else {
            Py_INCREF(rt);
            method = PyObject_CallNoArgs(rt);
            Py_DECREF(rt);
        }
        if (method == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                goto head_error;
            PyErr_Clear();
            method = Py_NewRef(Py_None);
        }
        set_slot(p, F->poff[P_METHOD], method);
        after = F->after[2];
    }
    PyObject *hook = SLOT(p, F->poff[P_BODY]);
    if (hook != NULL && hook != Py_None) {
        int w = want_body(&c, msg, &hd, req, method, h);
        if (w < 0)
            goto py_error;
        if (w == 2) {
            set_slot(p, F->poff[P_P], after);
            goto done;
        }
        if (w == 1) {  /* held: as _side_run, the body from the end of the head */
            if (set_slot_ll(p, F->poff[P_SIDE], 3) < 0 || side_take(&c, h) < 0)
                goto py_error;
            set_slot(p, F->poff[P_P], after);
            long long s3, brem;
            if (!get_ll(p, F->poff[P_SIDE], &s3) || !get_ll(p, F->poff[P_BREM], &brem)) {
                PyErr_SetString(PyExc_RuntimeError, "_h1feed: _side or _brem is not an int");
                goto py_error;
            }
            if (s3 && set_slot_ll(p, F->poff[P_FSKIP], brem) < 0)
                goto py_error;
            goto done;  /* the body reaches the chunk's end (take) */
        }
    }
    if (PyList_Append(c.out, msg) < 0)
        goto py_error;
    long long blen;
    if (req) {
        blen = hd.clen > 0 ? hd.clen : 0;
    } else {
        c.finals++;  /* status >= 200: final */
        if (str_is(method, F->s_head)) {  /* the stop after a HEAD response's head */
            set_slot(p, F->poff[P_P], Py_None);
            if (h >= n)
                goto done;
            /* the rest of the chunk: Http1Parser's loop from the end of the head */
            PyObject *nxt = Py_BuildValue("(On)", data, h);
            if (nxt == NULL)
                goto py_error;
            PyObject *fin = PyLong_FromLongLong(c.finals);
            if (fin == NULL) {
                Py_DECREF(nxt);
                goto py_error;
            }
            PyObject *rargs[6] = {p, c.out, data, ts, fin, nxt};
            PyObject *r = PyObject_VectorcallMethod(F->s_resume, rargs, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(fin);
            Py_DECREF(nxt);
            Py_DECREF(msg);
            Py_DECREF(method);
            Py_DECREF(hd.first);
            Py_DECREF(hd.second);
            Py_DECREF(hd.headers);
            Py_DECREF(c.out);
            return r;
        }
        if (str_is(method, F->s_connect) && hd.status < 300) {
            set_slot(p, F->poff[P_P], Py_None);
            set_slot(p, F->poff[P_STATE], F->s_tunnel);
            set_slot(p, F->poff[P_TENT], Py_False);
            goto done;
        }
        blen = (hd.status == 204 || hd.status == 304) ? 0 : hd.clen;
    }
    set_slot(p, F->poff[P_P], after);
    if (set_slot_ll(p, F->poff[P_FSKIP], h + blen - n) < 0)  /* >= 0: take */
        goto py_error;
done:
    Py_DECREF(msg);
    Py_DECREF(method);
    Py_DECREF(hd.first);
    Py_DECREF(hd.second);
    Py_DECREF(hd.headers);
    return c.out;
py_error: {
        PyObject *r = failed(&c);
        Py_XDECREF(msg);
        Py_XDECREF(method);
        Py_DECREF(hd.first);
        Py_DECREF(hd.second);
        Py_DECREF(hd.headers);
        Py_DECREF(c.out);
        return r;
    }
head_error:
    Py_XDECREF(msg);
    Py_XDECREF(method);
    Py_DECREF(hd.first);
    Py_DECREF(hd.second);
    Py_DECREF(hd.headers);
    Py_XDECREF(c.out);
    return NULL;
error: {
        PyObject *r = failed(&c);
        Py_DECREF(c.out);
        return r;
    }
}

static PyObject *feeder_feed(Feeder *F, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "feed(parser, data, ts_ns) takes 3 arguments");
        return NULL;
    }
    return feed_impl(F, args[0], args[1], args[2]);
}

static PyMethodDef feeder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))feeder_feed, METH_FASTCALL,
     "feed(parser, data, ts_ns) -> the messages Http1Parser.feed would return, or None (not taken: nothing done)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeederType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Feeder",
    .tp_basicsize = sizeof(Feeder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Feeder(api, Http1Parser, HttpMessage, Mcp, BodySink, AFTER, NO_OUT, MAX_HEAD, SNIFF_BYTES)",
    .tp_new = feeder_new,
    .tp_dealloc = (destructor)feeder_dealloc,
    .tp_traverse = (traverseproc)feeder_traverse,
    .tp_methods = feeder_methods,
};
