/* dict(zip(names, values)) in C, for the crash journal's line (kraken/meter/journal.py holds
 * the Python definition; tests/meter/test_fields_dict.py compares the two). Once a request:
 * dict() of a zip walks the pairs as a sequence of sequences (PySequence_Fast on each), ~0.55 us
 * for a record's 20 fields on Debian's Python 3.11. */
#include "speedups.h"

PyObject *
fields_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fields_dict takes (names, values), two tuples");
        return NULL;
    }
    PyObject *names = args[0], *values = args[1];
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (PyTuple_GET_SIZE(values) < n) {
        n = PyTuple_GET_SIZE(values);  /* as zip: the shorter decides */
    }
    PyObject *fields = _PyDict_NewPresized(n);  /* no resize on the way (3 for 20 fields) */
    if (fields == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyDict_SetItem(fields, PyTuple_GET_ITEM(names, i), PyTuple_GET_ITEM(values, i)) < 0) {
            Py_DECREF(fields);
            return NULL;
        }
    }
    return fields;
}
