/* The relay's per-read test in C: kraken/plainchunk.py holds the Python definition this must
 * equal (tests/upstream/test_plainchunk.py compares the two), and is used where this was not
 * built. A stream's provider read is tested once; in Python the test's six calls cost about
 * as much as the rest of the read's Python together. */
#include "speedups.h"  /* first: Python.h sets the feature macros (memmem) */

/* A non-null "usage" object: the pattern "usage": ?\{ anywhere in the n bytes at p. */
static int
has_usage_object(const char *p, Py_ssize_t n)
{
    static const char key[] = "\"usage\":";
    const Py_ssize_t key_len = sizeof key - 1;
    const char *end = p + n;
    const char *at = p;
    while (end - at > key_len) {
        const char *hit = memmem(at, (size_t)(end - at), key, (size_t)key_len);
        if (hit == NULL) {
            return 0;
        }
        const char *after = hit + key_len;
        if (after < end && *after == ' ') {
            after++;
        }
        if (after < end && *after == '{') {
            return 1;
        }
        at = hit + 1;
    }
    return 0;
}

/* The size line Python's b"%x" % size writes, into line (room for 2 + 2 * sizeof(size_t)):
 * its length. (Not snprintf: a format string parsed per read showed in a relay's profile.) */
static int
hex_line(char *line, Py_ssize_t size)
{
    static const char digits[] = "0123456789abcdef";
    char reversed[2 * sizeof(size_t)];
    size_t value = size < 0 ? (size_t)-size : (size_t)size;
    int n = 0, len = 0;
    do {
        reversed[n++] = digits[value & 15];
        value >>= 4;
    } while (value);
    if (size < 0) {
        line[len++] = '-';
    }
    while (n) {
        line[len++] = reversed[--n];
    }
    return len;
}

int
is_plain_sse_chunk(const char *p, Py_ssize_t n)
{
    if (n < 4 || memcmp(p + n - 4, "\n\n\r\n", 4) != 0) {
        return 0;
    }
    const char *crlf = memmem(p, (size_t)n, "\r\n", 2);  /* found: p ends with one */
    const Py_ssize_t eol = crlf - p;
    char line[2 + 2 * sizeof(size_t)];
    int line_len = hex_line(line, n - eol - 4);
    return line_len == eol && memcmp(line, p, (size_t)eol) == 0 && !has_usage_object(p, n);
}

PyObject *
plain_sse_chunk(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain_sse_chunk takes bytes");
        return NULL;
    }
    return PyBool_FromLong(is_plain_sse_chunk(PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}
