/* A provider's response header fields, read in C: kraken/upstream/response.py's
 * ResponseParser._fields is the definition this must equal wherever it answers
 * (tests/upstream/test_response_fields.py compares the two on every field section of the
 * parser's tests and thousands of mutated ones). It answers None for a section it would
 * refuse, or one with a Content-Length too long for a machine integer, and the Python reader
 * then decides. One pass where the Python one splits, partitions, strips and loops in
 * Python: ~200 bytecode instructions a response.
 * response_head reads a whole head from the start of a read with the same field reader, as
 * ResponseParser._read_head and _head would (response_head_py defines it): the status line
 * and the blank line found here, not by two bytes.find calls (whose argument parsing alone
 * is ~270 instructions each on 3.11). */
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

/* The fields of section [p, p + n): 1 with *headers (a new list), *length (-1: none),
 * *chunked and *close set; 0 where the Python reader must decide; -1 with an error set. */
static int
read_fields(const unsigned char *p, Py_ssize_t n, PyObject **headers_out, long long *length_out,
            int *chunked_out, int *close_out)
{
    PyObject *headers = PyList_New(0);
    if (headers == NULL) {
        return -1;
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
            return -1;
        }
        Py_DECREF(pair);
        if (end >= n) {
            break;
        }
        at = end + 2;
    }
    *headers_out = headers;
    *length_out = length;
    *chunked_out = chunked;
    *close_out = close;
    return 1;

undecided:
    Py_DECREF(headers);
    return 0;
}

/* items[0..3]: (headers, length, chunked, close) from read_fields' answer, each a new
 * reference (NULL where one could not be made: stolen_tuple then fails) */
static void
fill_fields(PyObject **items, PyObject *headers, long long length, int chunked, int close)
{
    items[0] = headers;
    items[1] = length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(length);
    items[2] = Py_NewRef(chunked ? Py_True : Py_False);
    items[3] = Py_NewRef(close ? Py_True : Py_False);
}

/* response_fields(section) -> (headers, length, chunked, close) | None */
PyObject *
response_fields(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "response_fields takes bytes");
        return NULL;
    }
    PyObject *headers = NULL;
    long long length = -1;
    int chunked = 0, close = 0;
    int found = read_fields((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg),
                            &headers, &length, &chunked, &close);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *items[4];
    fill_fields(items, headers, length, chunked, close);
    return stolen_tuple(items, 4);
}

/* Where the first CRLF CRLF in [p, p + n) begins, or -1 (memchr for the CR: fast where the
 * field lines are long, and no libc call per byte). */
static Py_ssize_t
find_blank_line(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *at = p, *end = p + n;
    while (end - at >= 4) {
        const unsigned char *cr = memchr(at, '\r', (size_t)(end - at - 3));
        if (cr == NULL) {
            return -1;
        }
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') {
            return cr - p;
        }
        at = cr + 1;
    }
    return -1;
}

/* response_head(data) -> (head_end, status, headers, length, chunked, close) | None: a read
 * that begins with a whole HTTP/1.1 head of a final (2xx-9xx) response, read as
 * ResponseParser._read_head and _head read it; None for anything else (an incomplete head,
 * HTTP/1.0, an interim or malformed status, a field section read_fields leaves undecided). */
PyObject *
response_head(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "response_head takes bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    const Py_ssize_t n = PyBytes_GET_SIZE(arg);
    const Py_ssize_t end = find_blank_line(p, n);
    if (end < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '2' || p[9] > '9'
            || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9') {
        Py_RETURN_NONE;
    }
    const long status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    /* the status line ends at the head's first CRLF; none: a head of that line alone */
    Py_ssize_t eol = 12;
    while (eol + 1 < end && !(p[eol] == '\r' && p[eol + 1] == '\n')) {
        eol++;
    }
    PyObject *headers = NULL;
    long long length = -1;
    int chunked = 0, close = 0, found = 1;
    if (eol + 1 >= end) {
        headers = PyList_New(0);
        found = headers == NULL ? -1 : 1;
    }
    else {
        found = read_fields(p + eol + 2, end - eol - 2, &headers, &length, &chunked, &close);
    }
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *items[6] = {PyLong_FromSsize_t(end + 4), PyLong_FromLong(status)};
    fill_fields(items + 2, headers, length, chunked, close);
    return stolen_tuple(items, 6);
}
