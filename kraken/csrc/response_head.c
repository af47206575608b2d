/* A provider's response header fields, read in C: kraken/upstream/response.py's
 * ResponseParser._fields is the definition this must equal wherever it answers
 * (tests/upstream/test_response_fields.py compares the two on every field section of the
 * parser's tests and thousands of mutated ones). It answers None for a section it would
 * refuse, or one with a Content-Length too long for a machine integer, and the Python reader
 * then decides. One pass where the Python one splits, partitions, strips and loops in
 * Python: ~200 bytecode instructions a response. */
#include "speedups.h"

#define MAX_LENGTH_DIGITS 18

/* bytes.strip()'s whitespace */
static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x0b || c == 0x0c;
}

/* One field line [p, p + n): its name's end and its value, stripped. 0: not a field line. */
static int
field(const unsigned char *p, Py_ssize_t n, Py_ssize_t *name_end, Py_ssize_t *value_start,
      Py_ssize_t *value_end)
{
    const unsigned char *colon = memchr(p, ':', (size_t)n);
    if (colon == NULL) {
        return 0;
    }
    Py_ssize_t name_len = colon - p;
    if (name_len == 0 || is_space(p[0]) || is_space(p[name_len - 1])) {
        return 0;
    }
    Py_ssize_t start = name_len + 1, end = n;
    while (start < end && is_space(p[start])) {
        start++;
    }
    while (end > start && is_space(p[end - 1])) {
        end--;
    }
    *name_end = name_len;
    *value_start = start;
    *value_end = end;
    return 1;
}

/* response_fields(section) -> (headers, length, chunked, close) | None */
PyObject *
response_fields(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "response_fields takes bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    const Py_ssize_t n = PyBytes_GET_SIZE(arg);
    PyObject *headers = PyList_New(0);
    if (headers == NULL) {
        return NULL;
    }
    long long length = -1;
    int chunked = 0, close = 0;
    Py_ssize_t at = 0;
    for (;;) {
        /* the line: up to the next CR, which must start a CRLF; no LF inside it */
        Py_ssize_t end = at;
        while (end < n && p[end] != '\r' && p[end] != '\n') {
            end++;
        }
        if (end < n && (p[end] == '\n' || end + 1 >= n || p[end + 1] != '\n')) {
            goto undecided;  /* a bare CR or LF */
        }
        Py_ssize_t name_end, value_start, value_end;
        if (!field(p + at, end - at, &name_end, &value_start, &value_end)) {
            goto undecided;
        }
        const unsigned char *name = p + at, *value = p + at + value_start;
        const Py_ssize_t value_len = value_end - value_start;
        if (ascii_lower_equal(name, name_end, "content-length")) {
            if (value_len == 0 || value_len > MAX_LENGTH_DIGITS) {
                goto undecided;
            }
            long long v = 0;
            for (Py_ssize_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9') {
                    goto undecided;
                }
                v = v * 10 + (value[i] - '0');
            }
            if (length >= 0 && length != v) {
                goto undecided;
            }
            length = v;
        }
        else if (ascii_lower_equal(name, name_end, "transfer-encoding")) {
            if (chunked || !ascii_lower_equal(value, value_len, "chunked")) {
                goto undecided;
            }
            chunked = 1;
        }
        else if (ascii_lower_equal(name, name_end, "connection")) {
            close = close || holds_close(value, value_len);
        }
        PyObject *lname = lower_bytes(name, name_end);
        PyObject *svalue = lname == NULL ? NULL
            : PyBytes_FromStringAndSize((const char *)value, value_len);
        PyObject *pair = svalue == NULL ? NULL : PyTuple_Pack(2, lname, svalue);
        Py_XDECREF(lname);
        Py_XDECREF(svalue);
        if (pair == NULL || PyList_Append(headers, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(headers);
            return NULL;
        }
        Py_DECREF(pair);
        if (end >= n) {
            break;
        }
        at = end + 2;
    }
    PyObject *items[4] = {
        headers, length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(length),
        Py_NewRef(chunked ? Py_True : Py_False), Py_NewRef(close ? Py_True : Py_False),
    };
    return stolen_tuple(items, 4);

undecided:
    Py_DECREF(headers);
    Py_RETURN_NONE;
}
