/* The kraken._speedups module: its method table (the functions are in the files beside). */
#include "speedups.h"

static PyMethodDef methods[] = {
    {"plain_sse_chunk", plain_sse_chunk, METH_O,
     "True if the read is one whole HTTP/1.1 chunk, its size line as Kraken writes it, "
     "holding whole SSE events without a usage object (kraken/plainchunk.py)."},
    {"whole_chunks", whole_chunks, METH_O,
     "(body, done) if a read is whole chunks with plain size lines, maybe then the last chunk, "
     "else None (kraken/h1framing.py)."},
    {"usage_at", (PyCFunction)(void (*)(void))usage_at, METH_FASTCALL,
     "Where the first non-null usage object (\"usage\": ?{) begins at or after `start`, "
     "or -1 (kraken/gateway/sse.py)."},
    {"read_common_head", (PyCFunction)(void (*)(void))read_common_head, METH_FASTCALL,
     "The request head as a CommonHead if it is in the common subset, else None "
     "(kraken/http/h1fast.py)."},
    {"bind_common_head", bind_common_head, METH_O,
     "Set the CommonHead type read_common_head returns (kraken/http/h1fast.py)."},
    {"response_fields", response_fields, METH_O,
     "(headers, content_length, chunked, close) of a response's field section, or None "
     "where the Python reader must decide (kraken/upstream/response.py)."},
    {"response_head", response_head, METH_O,
     "(head_end, status, headers, content_length, chunked, close) of a read beginning with a "
     "whole head of a final HTTP/1.1 response, or None (kraken/upstream/response.py)."},
    {"header_value", (PyCFunction)(void (*)(void))header_value, METH_FASTCALL,
     "The first value of the field named `name` in a request's (name, value) fields, or None "
     "(kraken/http/exchange.py)."},
    {"nests_deeper", (PyCFunction)(void (*)(void))nests_deeper, METH_FASTCALL,
     "Whether a dict or list inside a parsed JSON value (itself level 1) is deeper than "
     "`limit` levels (kraken/gateway/body.py)."},
    {"request_bytes", (PyCFunction)(void (*)(void))request_bytes, METH_FASTCALL,
     "A provider request's bytes: its line, fields, a blank line and the body; None where a "
     "field is not a (bytes, bytes) tuple or the body not bytes "
     "(kraken/upstream/connection.py)."},
    {"fields_dict", (PyCFunction)(void (*)(void))fields_dict, METH_FASTCALL,
     "dict(zip(names, values)) for two tuples (kraken/meter/journal.py)."},
    {"only_types", (PyCFunction)(void (*)(void))only_types, METH_FASTCALL,
     "Whether the type of every value in a tuple is in a frozenset of types "
     "(kraken/meter/journal.py)."},
    {"populate_arenas", populate_arenas, METH_NOARGS,
     "Map pymalloc's new arenas with their pages present (kraken/app.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kraken._speedups",
    "Kraken's hot byte scans in C; each has its Python definition beside its caller.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (add_pipe_type(m) < 0 || add_deadline_type(m) < 0
                      || add_series_types(m) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
