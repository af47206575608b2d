/* The common request head's reader in C: kraken/http/h1fast.py holds the Python definition
 * this must equal (tests/http/test_h1head_reader.py compares the two on every head of the
 * malformed-request and smuggling tables and thousands of mutated ones), and is used where
 * this was not built. It reads the head in one pass where the Python one runs two regex
 * scans, a comprehension and a loop over the fields: ~300 bytecode instructions a request. */
#include "speedups.h"

#define MAX_LENGTH_DIGITS 18  /* longer Content-Length values go to h11 */
#define MAX_KEPT 64           /* fields whose offsets pass 1 keeps for pass 2 */

static PyObject *head_type = NULL;  /* h1fast.CommonHead, given once by bind_common_head() */

static int
is_ascii_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Byte classes, one table lookup a byte (a head's field bytes are each read once or twice). */
enum { C_TCHAR = 1, C_VALUE_STOP = 2 };
static unsigned char byte_class[256];

static void
init_byte_classes(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        /* RFC 9110 tchar */
        if (is_ascii_alnum((unsigned char)c) || (c != 0 && strchr("-!#$%&'*+.^_`|~", c) != NULL)) {
            k |= C_TCHAR;
        }
        /* A byte no field value may hold: a control byte (HTAB aside), DEL, CR or LF. */
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            k |= C_VALUE_STOP;
        }
        byte_class[c] = k;
    }
}

static inline int
is_tchar(unsigned char c)
{
    return byte_class[c] & C_TCHAR;
}

static inline int
is_value_stop(unsigned char c)
{
    return byte_class[c] & C_VALUE_STOP;
}

/* uri-host [":" port] (h1fast.HOST, whole value). */
static int
is_host(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    if (n > 0 && p[0] == '[') {
        i = 1;
        while (i < n && ((is_ascii_alnum(p[i]) && (p[i] <= '9' || (p[i] | 32) <= 'f'))
                         || p[i] == ':' || p[i] == '.')) {
            i++;
        }
        if (i == 1 || i >= n || p[i] != ']') {
            return 0;
        }
        i++;
    }
    else {
        while (i < n && (is_ascii_alnum(p[i]) || strchr("-._~!$&'()*+,;=%", p[i]) != NULL)
               && p[i] != 0) {
            i++;
        }
    }
    if (i < n && p[i] == ':') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            i++;
        }
    }
    return i == n;
}

/* The request line: token SP visible+ SP "HTTP/1." [01] CRLF. Returns its length, or 0. */
static Py_ssize_t
request_line(const unsigned char *p, Py_ssize_t n, Py_ssize_t *method_end,
             Py_ssize_t *target_end)
{
    Py_ssize_t i = 0;
    while (i < n && is_tchar(p[i])) {
        i++;
    }
    if (i == 0 || i >= n || p[i] != ' ') {
        return 0;
    }
    *method_end = i++;
    Py_ssize_t target_start = i;
    while (i < n && p[i] >= 0x21 && p[i] <= 0x7e) {
        i++;
    }
    if (i == target_start || n - i < 11 || memcmp(p + i, " HTTP/1.", 8) != 0
            || (p[i + 8] != '0' && p[i + 8] != '1') || p[i + 9] != '\r' || p[i + 10] != '\n') {
        return 0;
    }
    *target_end = i;
    return i + 11;
}

/* One field line at p (up to its CRLF): its name and value, lower-cased and stripped.
 * Returns the length of the line with its CRLF, or 0 where it is not a common field line. */
static Py_ssize_t
field_line(const unsigned char *p, Py_ssize_t n, Py_ssize_t *name_end,
           Py_ssize_t *value_start, Py_ssize_t *value_end)
{
    Py_ssize_t i = 0;
    while (i < n && is_tchar(p[i])) {
        i++;
    }
    if (i == 0 || i >= n || p[i] != ':') {
        return 0;
    }
    *name_end = i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }
    *value_start = i;
    while (i < n && !is_value_stop(p[i])) {
        i++;
    }
    if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n') {
        return 0;
    }
    Py_ssize_t end = i;
    while (end > *value_start && (p[end - 1] == ' ' || p[end - 1] == '\t')) {
        end--;
    }
    *value_end = end;
    return i + 2;
}

enum { F_OTHER, F_CONTENT_TYPE, F_CONNECTION, F_HOST, F_CONTENT_LENGTH, F_TO_H11 };

static const struct { const char *name; Py_ssize_t len; int kind; } SPECIAL[] = {
    {"content-type", 12, F_CONTENT_TYPE}, {"connection", 10, F_CONNECTION}, {"host", 4, F_HOST},
    {"content-length", 14, F_CONTENT_LENGTH}, {"transfer-encoding", 17, F_TO_H11},
    {"expect", 6, F_TO_H11},
};

/* What read_common_head does with a field of this name (h1fast._SPECIAL). */
static int
field_kind(const unsigned char *name, Py_ssize_t n)
{
    for (size_t i = 0; i < sizeof SPECIAL / sizeof SPECIAL[0]; i++) {
        if (n == SPECIAL[i].len && ascii_lower_equal(name, n, SPECIAL[i].name)) {
            return SPECIAL[i].kind;
        }
    }
    return F_OTHER;
}

/* read_common_head(head, max_uri) -> CommonHead | None: kraken/http/h1fast.py's. */
PyObject *
read_common_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "read_common_head(head: bytes, max_uri: int)");
        return NULL;
    }
    if (head_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kraken._speedups.bind_common_head() was not called");
        return NULL;
    }
    Py_ssize_t max_uri = PyLong_AsSsize_t(args[1]);
    if (max_uri == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!byte_class['a']) {
        init_byte_classes();
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t method_end, target_end;
    Py_ssize_t pos = request_line(p, n, &method_end, &target_end);
    if (pos == 0 || n < 4 || memcmp(p + n - 4, "\r\n\r\n", 4) != 0) {
        Py_RETURN_NONE;
    }
    if (target_end - (method_end + 1) > max_uri) {
        Py_RETURN_NONE;
    }
    const int http11 = p[target_end + 8] == '1';
    const Py_ssize_t fields_end = n - 2;
    /* Each field's offsets, kept from pass 1 for pass 2 (a head with more reads them again). */
    Py_ssize_t seen[MAX_KEPT][4];
    /* Pass 1: every line a common field line, and what the special fields say. */
    Py_ssize_t count = 0, hosts = 0, lengths = 0, length = -1;
    Py_ssize_t type_at = -1, type_end = 0;
    int may_close = 0;
    for (Py_ssize_t at = pos; at < fields_end;) {
        Py_ssize_t name_end, value_start, value_end;
        Py_ssize_t used = field_line(p + at, fields_end - at, &name_end, &value_start,
                                     &value_end);
        if (used == 0) {
            Py_RETURN_NONE;
        }
        if (count < MAX_KEPT) {
            seen[count][0] = name_end;
            seen[count][1] = value_start;
            seen[count][2] = value_end;
            seen[count][3] = used;
        }
        const unsigned char *value = p + at + value_start;
        const Py_ssize_t value_len = value_end - value_start;
        switch (field_kind(p + at, name_end)) {
        case F_CONTENT_TYPE:
            if (type_at < 0) {
                type_at = at + value_start;
                type_end = at + value_end;
            }
            break;
        case F_CONNECTION:
            may_close = may_close || holds_close(value, value_len);
            break;
        case F_HOST:
            hosts++;
            if (!is_host(value, value_len)) {
                Py_RETURN_NONE;
            }
            break;
        case F_CONTENT_LENGTH:
            lengths++;
            if (value_len == 0 || value_len > MAX_LENGTH_DIGITS) {
                Py_RETURN_NONE;
            }
            length = 0;
            for (Py_ssize_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9') {
                    Py_RETURN_NONE;
                }
                length = length * 10 + (value[i] - '0');
            }
            break;
        case F_TO_H11:
            Py_RETURN_NONE;
        }
        count++;
        at += used;
    }
    if (hosts > 1 || (hosts == 0 && http11) || lengths > 1) {
        Py_RETURN_NONE;
    }
    /* Pass 2: the pairs. */
    PyObject *headers = PyTuple_New(count);
    if (headers == NULL) {
        return NULL;
    }
    Py_ssize_t index = 0;
    for (Py_ssize_t at = pos; at < fields_end; index++) {
        Py_ssize_t name_end, value_start, value_end, used;
        if (index < MAX_KEPT) {
            name_end = seen[index][0];
            value_start = seen[index][1];
            value_end = seen[index][2];
            used = seen[index][3];
        }
        else {
            used = field_line(p + at, fields_end - at, &name_end, &value_start, &value_end);
        }
        PyObject *name = lower_bytes(p + at, name_end);
        PyObject *value = name == NULL ? NULL : PyBytes_FromStringAndSize(
            (const char *)p + at + value_start, value_end - value_start);
        PyObject *pair = value == NULL ? NULL : PyTuple_Pack(2, name, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyTuple_SET_ITEM(headers, index, pair);
        at += used;
    }
    PyObject *items[7] = {
        PyBytes_FromStringAndSize((const char *)p, method_end),
        PyBytes_FromStringAndSize((const char *)p + method_end + 1, target_end - (method_end + 1)),
        PyBytes_FromStringAndSize(http11 ? "1.1" : "1.0", 3),
        headers,
        length < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(length),
        type_at < 0 ? Py_NewRef(Py_None)
                    : PyBytes_FromStringAndSize((const char *)p + type_at, type_end - type_at),
        Py_NewRef(may_close ? Py_True : Py_False),
    };
    PyObject *fields = stolen_tuple(items, 7);
    if (fields == NULL) {
        return NULL;
    }
    PyObject *head = PyObject_CallOneArg(head_type, fields);
    Py_DECREF(fields);
    return head;
}

PyObject *
bind_common_head(PyObject *module, PyObject *type)
{
    Py_XSETREF(head_type, Py_NewRef(type));
    Py_RETURN_NONE;
}
