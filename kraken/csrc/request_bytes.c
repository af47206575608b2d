/* A provider request's bytes in C (kraken/upstream/connection.py holds the Python definition,
 * request_bytes_py; tests/upstream/test_request_bytes.py compares the two). Once a request:
 * the Python join formats the request line, maps b": ".join over the fields (a call each,
 * through map) and joins the lot, ~6k instructions for an SDK-sized request. */
#include "speedups.h"

/* The request line, each field, a blank line, the body: one bytes object. None when a field is
 * not a (bytes, bytes) tuple or the body is not bytes: the Python definition serves those. */
PyObject *
request_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "request_bytes takes (method, target, headers, body)");
        return NULL;
    }
    Py_ssize_t method_len, target_len;
    const char *method = PyUnicode_AsUTF8AndSize(args[0], &method_len);
    const char *target = method ? PyUnicode_AsUTF8AndSize(args[1], &target_len) : NULL;
    if (target == NULL) {
        return NULL;  /* a lone surrogate: UnicodeEncodeError, as str.encode raises */
    }
    PyObject *body = args[3];
    if (!PyBytes_CheckExact(body) || (!PyList_CheckExact(args[2]) && !PyTuple_CheckExact(args[2]))) {
        Py_RETURN_NONE;
    }
    PyObject *fields = args[2];
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fields);
    PyObject **items = PySequence_Fast_ITEMS(fields);
    Py_ssize_t size = method_len + 1 + target_len + 9 + 2 + 2 + PyBytes_GET_SIZE(body);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            Py_RETURN_NONE;
        }
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) + 2
                + PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        return NULL;
    }
    char *p = PyBytes_AS_STRING(out);
#define PUT(src, len) (memcpy(p, (src), (size_t)(len)), p += (len))
    PUT(method, method_len);
    *p++ = ' ';
    PUT(target, target_len);
    PUT(" HTTP/1.1\r\n", 11);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(items[i], 0), *value = PyTuple_GET_ITEM(items[i], 1);
        PUT(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        PUT(": ", 2);
        PUT(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        PUT("\r\n", 2);
    }
    PUT("\r\n", 2);
    PUT(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body));
#undef PUT
    return out;
}
