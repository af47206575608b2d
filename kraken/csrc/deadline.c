/* kraken.timers.Deadline in C (kraken/timers.py holds the Python version, used where this was
 * not built, and tests/test_timers.py runs both). Every connection, inbound and to a provider,
 * arms, touches and stops one per request: in Python that was ~90 bytecode instructions of a
 * non-stream request, each call a Python frame. Same attributes, same behaviour: `last` and
 * `timeout` hold the objects given (loop times and timeouts are floats), so PipeProtocol
 * (pipe.c) still sets `last` through its slot. */
#include "speedups.h"
#include "structmember.h"

#define SLACK_S 0.001 /* timers.py's _SLACK_S: uvloop fires up to 0.5 ms early */

typedef struct {
    PyObject_HEAD
    PyObject *loop;       /* _loop */
    PyObject *on_expire;  /* _on_expire: None once closed */
    PyObject *handle;     /* _handle: the loop's TimerHandle, or None */
    PyObject *last;       /* loop time of the last activity */
    PyObject *timeout;    /* 0 (or less): disarmed */
} DeadlineObject;

static PyObject *str_time, *str_call_at, *str_when, *str_cancel, *str_fire;

static PyObject *
loop_time(DeadlineObject *self)
{
    return PyObject_CallMethodNoArgs(self->loop, str_time);
}

/* self._handle = self._loop.call_at(due, self._fire) */
static int
schedule(DeadlineObject *self, double due)
{
    PyObject *fire = PyObject_GetAttr((PyObject *)self, str_fire);
    if (fire == NULL) {
        return -1;
    }
    PyObject *when = PyFloat_FromDouble(due);
    if (when == NULL) {
        Py_DECREF(fire);
        return -1;
    }
    PyObject *handle = PyObject_CallMethodObjArgs(self->loop, str_call_at, when, fire, NULL);
    Py_DECREF(when);
    Py_DECREF(fire);
    if (handle == NULL) {
        return -1;
    }
    Py_XSETREF(self->handle, handle);  /* (NULL: a cancel() before deleted it) */
    return 0;
}

/* handle.cancel(), the timer left in place (the caller drops or replaces it). */
static int
cancel_timer(PyObject *handle)
{
    PyObject *done = PyObject_CallMethodNoArgs(handle, str_cancel);
    if (done == NULL) {
        return -1;
    }
    Py_DECREF(done);
    return 0;
}

static int
deadline_init(DeadlineObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", "on_expire", NULL};
    PyObject *loop, *on_expire;
    /* Two positional arguments, as every connection passes them: taken as they are (the
     * parser, for keywords or a wrong call, interprets its format string each time). */
    if (PyTuple_GET_SIZE(args) == 2 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0)) {
        loop = PyTuple_GET_ITEM(args, 0);
        on_expire = PyTuple_GET_ITEM(args, 1);
    }
    else if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Deadline", kwlist, &loop,
                                          &on_expire)) {
        return -1;
    }
    PyObject *zero = PyFloat_FromDouble(0.0);
    if (zero == NULL) {
        return -1;
    }
    Py_INCREF(loop);
    Py_XSETREF(self->loop, loop);
    Py_INCREF(on_expire);
    Py_XSETREF(self->on_expire, on_expire);
    Py_INCREF(Py_None);
    Py_XSETREF(self->handle, Py_None);
    Py_INCREF(zero);
    Py_XSETREF(self->last, zero);
    Py_XSETREF(self->timeout, zero);
    return 0;
}

static int
deadline_traverse(DeadlineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->on_expire);
    Py_VISIT(self->handle);
    Py_VISIT(self->last);
    Py_VISIT(self->timeout);
    return 0;
}

static int
deadline_clear(DeadlineObject *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->on_expire);
    Py_CLEAR(self->handle);
    Py_CLEAR(self->last);
    Py_CLEAR(self->timeout);
    return 0;
}

static void
deadline_dealloc(DeadlineObject *self)
{
    PyObject_GC_UnTrack(self);
    deadline_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A slot read by C: AttributeError if it was deleted, as its member descriptor would say. */
static PyObject *
slot(PyObject *value, const char *name)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'Deadline' object attribute '%s' is not set", name);
    }
    return value;
}

static PyObject *
deadline_arm(DeadlineObject *self, PyObject *timeout)
{
    if (slot(self->on_expire, "_on_expire") == NULL || slot(self->loop, "_loop") == NULL) {
        return NULL;
    }
    if (self->on_expire == Py_None) { /* closed */
        Py_RETURN_NONE;
    }
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    Py_INCREF(timeout);
    Py_XSETREF(self->timeout, timeout);
    if (seconds <= 0) {
        Py_RETURN_NONE;
    }
    PyObject *now = loop_time(self);
    if (now == NULL) {
        return NULL;
    }
    double due = PyFloat_AsDouble(now);
    Py_XSETREF(self->last, now);
    if (due == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    due += seconds;
    PyObject *handle = slot(self->handle, "_handle");  /* (deleted: AttributeError) */
    if (handle == NULL) {
        return NULL;
    }
    if (handle != Py_None) {
        Py_INCREF(handle);  /* as Python's local: when() may replace self._handle */
        PyObject *when = PyObject_CallMethodNoArgs(handle, str_when);
        double at = when == NULL ? -1.0 : PyFloat_AsDouble(when);
        Py_XDECREF(when);
        if (at == -1.0 && PyErr_Occurred()) {
            Py_DECREF(handle);
            return NULL;
        }
        if (at <= due + SLACK_S) { /* due no later: it re-arms itself for the rest */
            Py_DECREF(handle);
            Py_RETURN_NONE;
        }
        int cancelled = cancel_timer(handle);
        Py_DECREF(handle);
        if (cancelled < 0) {
            return NULL;
        }
    }
    if (schedule(self, due) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
deadline_touch(DeadlineObject *self, PyObject *unused)
{
    if (slot(self->loop, "_loop") == NULL) {
        return NULL;
    }
    PyObject *now = loop_time(self);
    if (now == NULL) {
        return NULL;
    }
    Py_XSETREF(self->last, now);
    Py_RETURN_NONE;
}

static int
disarm(DeadlineObject *self)
{
    PyObject *zero = PyFloat_FromDouble(0.0);
    if (zero == NULL) {
        return -1;
    }
    Py_XSETREF(self->timeout, zero);
    return 0;
}

static PyObject *
deadline_cancel(DeadlineObject *self, PyObject *unused)
{
    if (disarm(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
stop(DeadlineObject *self)
{
    if (disarm(self) < 0 || slot(self->handle, "_handle") == NULL) {
        return -1;
    }
    if (self->handle != Py_None) {
        if (cancel_timer(self->handle) < 0) {
            return -1;
        }
        Py_INCREF(Py_None);
        Py_XSETREF(self->handle, Py_None);  /* (NULL: the cancel() deleted it) */
    }
    return 0;
}

static PyObject *
deadline_stop(DeadlineObject *self, PyObject *unused)
{
    if (stop(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
deadline_close(DeadlineObject *self, PyObject *unused)
{
    if (stop(self) < 0) {
        return NULL;
    }
    Py_INCREF(Py_None);
    Py_XSETREF(self->on_expire, Py_None);
    Py_RETURN_NONE;
}

static PyObject *
deadline_fire(DeadlineObject *self, PyObject *unused)
{
    Py_INCREF(Py_None);
    Py_XSETREF(self->handle, Py_None);
    if (slot(self->timeout, "timeout") == NULL || slot(self->last, "last") == NULL
            || slot(self->loop, "_loop") == NULL) {
        return NULL;
    }
    double timeout = PyFloat_AsDouble(self->timeout);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (timeout <= 0) {
        Py_RETURN_NONE;
    }
    double due = PyFloat_AsDouble(self->last);
    if (due == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    due += timeout;
    PyObject *now = loop_time(self);
    if (now == NULL) {
        return NULL;
    }
    double at = PyFloat_AsDouble(now);
    Py_DECREF(now);
    if (at == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    /* uvloop rounds timers to whole milliseconds and may fire up to 0.5 ms early: re-arming
     * for that remainder would spin through zero-delay callbacks. */
    if (at < due - SLACK_S) {
        if (schedule(self, due) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (disarm(self) < 0) {
        return NULL;
    }
    PyObject *on_expire = self->on_expire;
    if (on_expire == NULL || on_expire == Py_None) {
        Py_RETURN_NONE;
    }
    Py_INCREF(on_expire);
    PyObject *result = PyObject_CallNoArgs(on_expire);
    Py_DECREF(on_expire);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyMethodDef deadline_methods[] = {
    {"arm", (PyCFunction)deadline_arm, METH_O,
     "(Re)start the deadline with a new timeout; 0 disables it. A timer already due no later "
     "than the new deadline is kept (it re-arms itself for the rest when it fires)."},
    {"touch", (PyCFunction)deadline_touch, METH_NOARGS, "Activity now: `last` = loop.time()."},
    {"cancel", (PyCFunction)deadline_cancel, METH_NOARGS,
     "Disarm while the owner lives on (a pending timer fires once into nothing, or is reused)."},
    {"stop", (PyCFunction)deadline_stop, METH_NOARGS,
     "Disarm for good: drop the timer and its reference to this deadline."},
    {"close", (PyCFunction)deadline_close, METH_NOARGS,
     "stop() and forget the callback: `arm` does nothing afterwards."},
    {"_fire", (PyCFunction)deadline_fire, METH_NOARGS, "The timer's callback."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef deadline_members[] = {
    {"_loop", T_OBJECT_EX, offsetof(DeadlineObject, loop), 0, NULL},
    {"_on_expire", T_OBJECT_EX, offsetof(DeadlineObject, on_expire), 0, NULL},
    {"_handle", T_OBJECT_EX, offsetof(DeadlineObject, handle), 0, NULL},
    {"last", T_OBJECT_EX, offsetof(DeadlineObject, last), 0,
     "Loop time of the last activity (a per-read hot path may store loop.time() here itself)."},
    {"timeout", T_OBJECT_EX, offsetof(DeadlineObject, timeout), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DeadlineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kraken._speedups.Deadline",
    .tp_doc = "Deadline(loop, on_expire): calls on_expire once `timeout` seconds pass without "
              "touch() (kraken/timers.py).",
    .tp_basicsize = sizeof(DeadlineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)deadline_init,
    .tp_dealloc = (destructor)deadline_dealloc,
    .tp_traverse = (traverseproc)deadline_traverse,
    .tp_clear = (inquiry)deadline_clear,
    .tp_methods = deadline_methods,
    .tp_members = deadline_members,
};

int
add_deadline_type(PyObject *module)
{
    if ((str_time = PyUnicode_InternFromString("time")) == NULL
            || (str_call_at = PyUnicode_InternFromString("call_at")) == NULL
            || (str_when = PyUnicode_InternFromString("when")) == NULL
            || (str_cancel = PyUnicode_InternFromString("cancel")) == NULL
            || (str_fire = PyUnicode_InternFromString("_fire")) == NULL
            || PyType_Ready(&DeadlineType) < 0) {
        return -1;
    }
    Py_INCREF(&DeadlineType);
    if (PyModule_AddObject(module, "Deadline", (PyObject *)&DeadlineType) < 0) {
        Py_DECREF(&DeadlineType);
        return -1;
    }
    return 0;
}
