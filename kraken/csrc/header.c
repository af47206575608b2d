/* Request.header in C (kraken/http/exchange.py holds the Python definition, used where this was
 * not built; tests/http/test_header_value.py compares the two). A request's header lookups scan
 * its field list: an SDK sends 15-20 fields, and each lookup that finds nothing (a trace or
 * opt-in header most clients never send) ran four bytecodes a field. */
#include "speedups.h"

PyObject *
header_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "header_value takes (headers, name)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "header_value takes a sequence of (name, value)");
    if (seq == NULL) {
        return NULL;
    }
    PyObject *name = args[1];
    const int name_bytes = PyBytes_CheckExact(name);
    const char *want = name_bytes ? PyBytes_AS_STRING(name) : NULL;
    const Py_ssize_t want_len = name_bytes ? PyBytes_GET_SIZE(name) : 0;
    /* the length and item read at each step, as Python iterates a list: a comparison (or a
     * pair's iteration) may run code that changes the list */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        /* the (name, value) tuple the readers make; anything else as Python unpacks it */
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *pair;
        if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
            pair = Py_NewRef(item);
        } else {
            Py_INCREF(item);  /* as Python's loop variable: iterating may drop it from the list */
            pair = PySequence_Tuple(item);
            Py_DECREF(item);
            if (pair != NULL && PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_ValueError, "a header field is not a (name, value) pair");
                Py_CLEAR(pair);
            }
        }
        if (pair == NULL) {
            Py_DECREF(seq);
            return NULL;
        }
        PyObject *key = PyTuple_GET_ITEM(pair, 0);
        int equal = name_bytes && PyBytes_CheckExact(key)
            ? PyBytes_GET_SIZE(key) == want_len
              && memcmp(PyBytes_AS_STRING(key), want, (size_t)want_len) == 0
            : PyObject_RichCompareBool(key, name, Py_EQ);
        if (equal != 0) {
            PyObject *found = equal > 0 ? PyTuple_GET_ITEM(pair, 1) : NULL;
            Py_XINCREF(found);
            Py_DECREF(pair);
            Py_DECREF(seq);
            return found;
        }
        Py_DECREF(pair);
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}
