/* kraken._speedups: the hot byte scans in C, one extension built from this directory
 * (setup.py). Each function has its Python definition beside the code that uses it, which
 * serves where the extension was not built (no C compiler) or KRAKEN_PURE_PYTHON is set,
 * and which tests compare it with:
 *   plain_sse_chunk   kraken/plainchunk.py          tests/upstream/test_plainchunk.py
 *   whole_chunks      kraken/h1framing.py           tests/test_h1framing.py
 *   usage_at          kraken/gateway/sse.py         tests/gateway/test_usage_at.py
 *   read_common_head  kraken/http/h1fast.py         tests/http/test_h1head_reader.py
 *   response_fields   kraken/upstream/response.py   tests/upstream/test_response_fields.py
 *   response_head     kraken/upstream/response.py   tests/upstream/test_response_fields.py
 *   PipeProtocol      kraken/upstream/connection.py tests/upstream/test_pipe.py (both versions)
 *   Deadline          kraken/timers.py              tests/test_timers.py (both versions)
 *   CounterCore, GaugeCore, HistogramCore
 *                     kraken/metrics_core.py        tests/test_metrics_series.py (both versions)
 *   header_value      kraken/http/exchange.py       tests/http/test_header_value.py
 *   request_bytes     kraken/upstream/connection.py tests/upstream/test_request_bytes.py
 *   nests_deeper      kraken/gateway/body.py        tests/gateway/test_nests_deeper.py
 *   fields_dict, only_types
 *                     kraken/meter/journal.py       tests/meter/test_fields_dict.py
 *   populate_arenas   (no Python version: the default arenas serve) tests/test_arenas.py
 * Shared here: the ASCII helpers more than one of them needs. */
#ifndef KRAKEN_SPEEDUPS_H
#define KRAKEN_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

PyObject *plain_sse_chunk(PyObject *module, PyObject *arg);
PyObject *whole_chunks(PyObject *module, PyObject *arg);
PyObject *usage_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *read_common_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *bind_common_head(PyObject *module, PyObject *type);
PyObject *response_fields(PyObject *module, PyObject *arg);
PyObject *response_head(PyObject *module, PyObject *arg);
PyObject *header_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *nests_deeper(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fields_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *request_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *only_types(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int is_plain_sse_chunk(const char *p, Py_ssize_t n);
int add_pipe_type(PyObject *module);
int add_deadline_type(PyObject *module);
int add_series_types(PyObject *module);
PyObject *populate_arenas(PyObject *module, PyObject *unused);

/* A tuple of the n new references in items, each stolen: where one is NULL (its error set),
 * all are released and NULL returned. Py_BuildValue parses its format string at every call:
 * ~2,800 instructions for a request head's seven fields (bench/callgrind.py). */
static inline PyObject *
stolen_tuple(PyObject **items, Py_ssize_t n)
{
    PyObject *tuple = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL) {
            goto fail;
        }
    }
    tuple = PyTuple_New(n);
    if (tuple == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(tuple, i, items[i]);
    }
    return tuple;
fail:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(items[i]);
    }
    return NULL;
}

/* The n bytes at p, ASCII letters lower-cased, equal the NUL-terminated lower-case lower. */
static inline int
ascii_lower_equal(const unsigned char *p, Py_ssize_t n, const char *lower)
{
    if (n != (Py_ssize_t)strlen(lower)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lower[i]) {
            return 0;
        }
    }
    return 1;
}

/* b"close" in value.lower() */
static inline int
holds_close(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 5 <= n; i++) {
        if (ascii_lower_equal(p + i, 5, "close")) {
            return 1;
        }
    }
    return 0;
}

/* bytes(p[:n]).lower() */
static inline PyObject *
lower_bytes(const unsigned char *p, Py_ssize_t n)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) {
        return NULL;
    }
    char *q = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        q[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    return out;
}

#endif
