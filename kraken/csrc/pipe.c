/* UpstreamConnection's pipe in C (kraken/upstream/connection.py holds the Python version, used
 * where this was not built). While a pipe is on, a long stream's usual provider read (a plain
 * SSE chunk: plainchunk.c) goes to the client's transport in this one C call, with no Python
 * frame: in a relay of many slow streams that read is most of the Python left.
 *
 * A PipeProtocol is the provider transport's protocol for the connection's whole life (set once,
 * in UpstreamConnection.connection_made, before the transport reads). Every read it does not
 * take, and every other protocol callback, it hands to the UpstreamConnection as it came. A read
 * it does not take also ends the pipe, as in Python: the first read that is not plain goes the
 * usual way (the parser), and the handler may pipe again. */
#include "speedups.h"

typedef struct {
    PyObject_HEAD
    PyObject *owner;          /* the UpstreamConnection */
    PyObject *owner_read;     /* its data_received, bound once */
    PyObject *time;           /* loop.time */
    PyObject *write;          /* the pipe's target (the client's transport.write), or NULL: off */
    Py_ssize_t piped;         /* reads taken since the last take() */
    double last_read;         /* loop time of the last read taken (0: none): the connection's
                                 read deadline counts from it when it fires. Kept here, in the
                                 object each read touches anyway, not stored in the deadline:
                                 a float in the deadline per read was two cold cache lines (the
                                 deadline's and the old float's) in a relay of many streams. */
} PipeObject;

static int
pipe_init(PipeObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *owner, *time;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "PipeProtocol takes no keyword arguments");
        return -1;
    }
    if (!PyArg_UnpackTuple(args, "PipeProtocol", 2, 2, &owner, &time)) {
        return -1;
    }
    PyObject *read = PyObject_GetAttrString(owner, "data_received");
    if (read == NULL) {
        return -1;
    }
    Py_XSETREF(self->owner_read, read);
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    Py_INCREF(time);
    Py_XSETREF(self->time, time);
    Py_CLEAR(self->write);
    self->piped = 0;
    self->last_read = 0.0;
    return 0;
}

static int
pipe_traverse(PipeObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->owner_read);
    Py_VISIT(self->time);
    Py_VISIT(self->write);
    return 0;
}

static int
pipe_clear(PipeObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->owner_read);
    Py_CLEAR(self->time);
    Py_CLEAR(self->write);
    return 0;
}

static void
pipe_dealloc(PipeObject *self)
{
    PyObject_GC_UnTrack(self);
    pipe_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The owner, for a callback forwarded to it (NULL with an error once the connection is gone). */
static PyObject *
owner_of(PipeObject *self)
{
    if (self->owner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the pipe's connection is gone");
    }
    return self->owner;
}

static PyObject *
pipe_data_received(PipeObject *self, PyObject *data)
{
    /* time is NULL once cleared (connection_lost) or in a pipe never initialised */
    if (self->write != NULL && self->time != NULL && PyBytes_Check(data)
            && is_plain_sse_chunk(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))) {
        PyObject *now = PyObject_CallNoArgs(self->time);
        if (now == NULL) {
            return NULL;
        }
        double when = PyFloat_AsDouble(now);
        Py_DECREF(now);
        if (when == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        self->last_read = when;
        /* read only now, as Python reads self._pipe after the clock: the clock (or the float's
         * release) may run code that ends or replaces the pipe */
        PyObject *write = self->write;
        if (write != NULL) {
            Py_INCREF(write);  /* the write may end the pipe (a shut client): keep it alive */
            PyObject *result = PyObject_CallOneArg(write, data);
            Py_DECREF(write);
            if (result != NULL) {
                Py_DECREF(result);
                self->piped++;
                Py_RETURN_NONE;
            }
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) {
                return NULL;
            }
            /* the client's transport closed under the pipe: the usual way drops the read */
            PyErr_Clear();
        }
    }
    Py_CLEAR(self->write);  /* the parser takes this read; the handler may pipe again */
    if (self->owner_read == NULL) {
        Py_RETURN_NONE;  /* the connection is gone: nothing reads */
    }
    return PyObject_CallOneArg(self->owner_read, data);
}

static PyObject *
pipe_take(PipeObject *self, PyObject *unused)
{
    Py_ssize_t piped = self->piped;
    self->piped = 0;
    return PyLong_FromSsize_t(piped);
}

static PyObject *
forward(PipeObject *self, const char *name, PyObject *arg)
{
    PyObject *owner = owner_of(self);
    if (owner == NULL) {
        return NULL;
    }
    PyObject *method = PyObject_GetAttrString(owner, name);
    if (method == NULL) {
        return NULL;
    }
    PyObject *result = arg == NULL ? PyObject_CallNoArgs(method) : PyObject_CallOneArg(method, arg);
    Py_DECREF(method);
    return result;
}

static PyObject *
pipe_connection_lost(PipeObject *self, PyObject *exc)
{
    PyObject *result = forward(self, "connection_lost", exc);
    pipe_clear(self);  /* the transport is done with us: no cycle through the owner */
    return result;
}

/* A callback without arguments, forwarded to the owner's method of the same name. */
#define FORWARDED(name)                                          \
    static PyObject *                                            \
    pipe_##name(PipeObject *self, PyObject *unused)              \
    {                                                            \
        return forward(self, #name, NULL);                       \
    }

FORWARDED(eof_received)
FORWARDED(pause_writing)
FORWARDED(resume_writing)

static PyObject *
pipe_get_write(PipeObject *self, void *closure)
{
    PyObject *write = self->write == NULL ? Py_None : self->write;
    Py_INCREF(write);
    return write;
}

static int
pipe_set_write(PipeObject *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->write);
    } else {
        Py_INCREF(value);
        Py_XSETREF(self->write, value);
    }
    return 0;
}

static PyMethodDef pipe_methods[] = {
    {"data_received", (PyCFunction)pipe_data_received, METH_O,
     "A plain SSE chunk to the pipe's target while it is on; any other read to the connection."},
    {"take", (PyCFunction)pipe_take, METH_NOARGS,
     "The reads the pipe took since the last take(), and start counting again."},
    {"connection_lost", (PyCFunction)pipe_connection_lost, METH_O, "Forwarded to the connection."},
    {"eof_received", (PyCFunction)pipe_eof_received, METH_NOARGS, "Forwarded to the connection."},
    {"pause_writing", (PyCFunction)pipe_pause_writing, METH_NOARGS, "Forwarded to the connection."},
    {"resume_writing", (PyCFunction)pipe_resume_writing, METH_NOARGS, "Forwarded to the connection."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
pipe_get_last_read(PipeObject *self, void *closure)
{
    return PyFloat_FromDouble(self->last_read);
}

static PyGetSetDef pipe_getset[] = {
    {"write", (getter)pipe_get_write, (setter)pipe_set_write,
     "Where plain reads go (the client's transport.write); None: the pipe is off.", NULL},
    {"last_read", (getter)pipe_get_last_read, NULL,
     "Loop time of the last read the pipe took (0.0: none yet).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PipeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kraken._speedups.PipeProtocol",
    .tp_doc = "PipeProtocol(connection, loop_time): a provider transport's protocol "
              "that writes plain SSE chunk reads to `write` while it is set, and hands every "
              "other read and callback to `connection` (kraken/upstream/connection.py).",
    .tp_basicsize = sizeof(PipeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pipe_init,
    .tp_dealloc = (destructor)pipe_dealloc,
    .tp_traverse = (traverseproc)pipe_traverse,
    .tp_clear = (inquiry)pipe_clear,
    .tp_methods = pipe_methods,
    .tp_getset = pipe_getset,
};

int
add_pipe_type(PyObject *module)
{
    if (PyType_Ready(&PipeType) < 0) {
        return -1;
    }
    Py_INCREF(&PipeType);
    if (PyModule_AddObject(module, "PipeProtocol", (PyObject *)&PipeType) < 0) {
        Py_DECREF(&PipeType);
        return -1;
    }
    return 0;
}
