/* The nesting bound of a parsed request body in C (kraken/gateway/body.py holds the Python
 * definition, nests_deeper_py; tests/gateway/test_nests_deeper.py compares the two). Every JSON
 * request is checked. The Python check counted the body's brackets first (two byte scans, ~17 us
 * for a 32 KiB conversation: as long as parsing it) to skip its walk; this walks the parsed
 * containers only, which a chat body has few of, and stops at the first one too deep. */
#include "speedups.h"

static int deeper(PyObject *value, long level, long limit);

/* `child` is a container at level + 1: past `limit`, or holding one that is (-1: an error). */
static inline int
too_deep(PyObject *child, long level, long limit)
{
    if (!PyDict_Check(child) && !PyList_Check(child)) {
        return 0;
    }
    if (level >= limit) {
        return 1;
    }
    /* bounded by `limit` (128 as Kraken calls it); a RecursionError, not a crash, past that */
    if (Py_EnterRecursiveCall(" in nests_deeper")) {
        return -1;
    }
    int found = deeper(child, level + 1, limit);
    Py_LeaveRecursiveCall();
    return found;
}

/* Whether a dict or list inside `value` (itself at level `level`) is deeper than `limit`;
 * -1 with an exception set on error. */
static int
deeper(PyObject *value, long level, long limit)
{
    int found = 0;
    if (PyDict_Check(value)) {
        Py_ssize_t pos = 0;
        PyObject *key, *child;
        while (!found && PyDict_Next(value, &pos, &key, &child)) {
            found = too_deep(child, level, limit);
        }
    } else if (PyList_Check(value)) {
        for (Py_ssize_t i = 0; !found && i < PyList_GET_SIZE(value); i++) {
            found = too_deep(PyList_GET_ITEM(value, i), level, limit);
        }
    }
    return found;
}

PyObject *
nests_deeper(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "nests_deeper takes (value, limit)");
        return NULL;
    }
    long limit = PyLong_AsLong(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int found = deeper(args[0], 1, limit);
    return found < 0 ? NULL : PyBool_FromLong(found);
}
