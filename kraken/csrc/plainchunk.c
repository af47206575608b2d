/* The relay's per-read test in C: kraken/plainchunk.py holds the Python definition this must
 * equal (tests/upstream/test_plainchunk.py compares the two), and is used where this was not
 * built. A stream's provider read is tested once; in Python the test's six calls cost about
 * as much as the rest of the read's Python together. */
#include "speedups.h"  /* first: Python.h sets the feature macros (memmem) */
#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#endif

/* Where the first non-null "usage" object begins in the n bytes at p (the pattern
 * "usage": ?\{, at its opening quote), or NULL. memchr for the key's 'g', the rarest of its
 * bytes in a provider's JSON (OpenAI's chunks: "system_fingerprint", "logprobs", "usage"),
 * then a compare: a whole 20-event answer (6 KB, "usage":null in every event) took ~23,000
 * instructions in Python's two bytes.find, one per spelling (bench/callgrind.py). */
static const char *
find_usage_object(const char *p, Py_ssize_t n)
{
    static const char key[] = "\"usage\":";
    const Py_ssize_t g_at = 4;  /* the key's 'g' */
    const char *end = p + n;
    const char *at = p + g_at;
    while (end - at > g_at) {  /* room for the key's last 4 bytes and a '{' after the 'g' */
        const char *g = memchr(at, 'g', (size_t)(end - at));
        if (g == NULL) {
            return NULL;
        }
        if (end - g > g_at && memcmp(g - g_at, key, sizeof key - 1) == 0) {
            const char *after = g - g_at + (sizeof key - 1);
            if (after < end && *after == ' ') {
                after++;
            }
            if (after < end && *after == '{') {
                return g - g_at;
            }
        }
        at = g + 1;
    }
    return NULL;
}

static int
has_usage_object(const char *p, Py_ssize_t n)
{
    return find_usage_object(p, n) != NULL;
}

PyObject *
usage_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyBytes_Check(args[0])
            || (nargs == 2 && !PyLong_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "usage_at takes bytes and an optional int start");
        return NULL;
    }
    const Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start = 0;
    if (nargs == 2) {
        start = PyLong_AsSsize_t(args[1]);
        if (start == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (start < 0) {  /* as bytes.find takes a negative start: from the end */
            start = start + n < 0 ? 0 : start + n;
        }
    }
    if (start > n) {
        return PyLong_FromLong(-1);
    }
    const char *p = PyBytes_AS_STRING(args[0]);
    const char *hit = find_usage_object(p + start, n - start);
    return PyLong_FromSsize_t(hit == NULL ? -1 : hit - p);
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

/* Whether the n bytes at p hold "error" (quotes included): plainchunk.ERROR_MARK, which every
 * provider error event holds (kraken/providers/stream_failure.py); a read with it goes to the
 * SSE tap, which records the stream as failed. With SSE2, 16 positions a step are tested for
 * the mark's "rr", rare in a provider's JSON, and only those are compared: glibc's memmem
 * alone tripled this test on a 20-event read (about 480 to 1350 ns); this, about 670 ns, and
 * 10-20 ns on a one-event read. */
static int
has_error_mark(const char *p, Py_ssize_t n)
{
    static const char mark[] = "\"error\"";
    const Py_ssize_t m = sizeof mark - 1;
    Py_ssize_t from = 0;  /* no mark begins before it */
#if defined(__SSE2__) && defined(__GNUC__)
    const __m128i r = _mm_set1_epi8('r');
    Py_ssize_t i = 2;  /* where a mark's first 'r' may be */
    for (; i + 17 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 1));
        unsigned mask = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, r), _mm_cmpeq_epi8(b, r)));
        while (mask) {
            const Py_ssize_t at = i + __builtin_ctz(mask) - 2;
            if (at + m <= n && memcmp(p + at, mark, (size_t)m) == 0) {
                return 1;
            }
            mask &= mask - 1;
        }
    }
    from = i - 2;
#endif
    return from < n && memmem(p + from, (size_t)(n - from), mark, (size_t)m) != NULL;
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
    return line_len == eol && memcmp(line, p, (size_t)eol) == 0 && !has_usage_object(p, n)
        && !has_error_mark(p, n);
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

/* The first CRLF in the n bytes at p, or NULL: memchr for the CR (vectorised), where glibc's
 * memmem on a two-byte needle went byte by byte (whole_chunks of a 20-chunk read: 2.45 us
 * with memmem, 0.53 us with this; the Python definition 3.85 us). */
static const char *
find_crlf(const char *p, Py_ssize_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL || cr + 1 >= end) {
            return NULL;
        }
        if (cr[1] == '\n') {
            return cr;
        }
        p = cr + 1;
    }
    return NULL;
}

/* The pieces of x (x_len bytes) that data.split(b"\r\n") would give, taken in pairs: a size
 * line as b"%x" writes it, then that many bytes of data holding no CRLF. Their total, or -1. */
static Py_ssize_t
chunk_pairs_total(const char *x, Py_ssize_t x_len)
{
    Py_ssize_t at = 0, total = 0;
    for (;;) {
        const char *size_end = at < x_len ? find_crlf(x + at, x_len - at) : NULL;
        if (size_end == NULL) {
            return -1;  /* a size line with no data piece after it: an odd count of pieces */
        }
        const Py_ssize_t data_at = size_end - x + 2;
        const char *data_end = data_at < x_len ? find_crlf(x + data_at, x_len - data_at) : NULL;
        const Py_ssize_t len = (data_end != NULL ? data_end - x : x_len) - data_at;
        char line[2 + 2 * sizeof(size_t)];
        if (len <= 0 || hex_line(line, len) != size_end - (x + at)
                || memcmp(line, x + at, (size_t)(size_end - (x + at))) != 0) {
            return -1;
        }
        total += len;
        if (data_end == NULL) {
            return total;
        }
        at = data_end - x + 2;
    }
}

PyObject *
whole_chunks(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "whole_chunks takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    const Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (n < 2 || memcmp(p + n - 2, "\r\n", 2) != 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t x_len = n - 2;  /* the split's pieces but its last, empty one */
    const int done = x_len >= 2 && memcmp(p + x_len - 2, "\r\n", 2) == 0;
    if (done) {  /* ..., "0", "": the last chunk ends the body, after at least one chunk */
        if (x_len < 5 || memcmp(p + x_len - 5, "\r\n0\r\n", 5) != 0) {
            Py_RETURN_NONE;
        }
        x_len -= 5;
    }
    const Py_ssize_t total = chunk_pairs_total(p, x_len);
    if (total < 0) {
        Py_RETURN_NONE;
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, total);
    if (body == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(body);
    for (Py_ssize_t at = 0; at < x_len;) {  /* checked above: copy each chunk's data */
        const char *size_end = memchr(p + at, '\r', (size_t)(x_len - at));
        Py_ssize_t len = 0;
        for (const char *c = p + at; c < size_end; c++) {
            len = (len << 4) | (*c <= '9' ? *c - '0' : *c - 'a' + 10);
        }
        memcpy(out, size_end + 2, (size_t)len);
        out += len;
        at = size_end - p + 2 + len + 2;
    }
    PyObject *items[2] = {body, Py_NewRef(done ? Py_True : Py_False)};
    return stolen_tuple(items, 2);
}
