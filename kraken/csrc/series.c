/* The hot half of kraken/metrics_core.py's series in C: a counter's inc, a gauge's inc and dec,
 * a histogram's observe (PyCounterValue, PyGaugeValue and PyHistogramValue there are their
 * definitions; tests/test_metrics_series.py runs both). A request counts ~9 series and
 * observes 3 histograms: in Python each was a frame, ~200 bytecode instructions a request.
 * These are base types: metrics_core adds the scrape-side methods (get, samples) in Python. */
#include "speedups.h"
#include "structmember.h"

/* ---- counter and gauge: one float ------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    double value;
} ValueObject;

/* The optional `amount` (default 1) as a double; -1 with an error if it is not a number. */
static int
amount_of(PyObject *const *args, Py_ssize_t nargs, const char *name, double *amount)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", name, nargs);
        return -1;
    }
    if (nargs == 0) {
        *amount = 1.0;
        return 0;
    }
    *amount = PyFloat_AsDouble(args[0]);
    return (*amount == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *
counter_inc(ValueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    double amount;
    if (amount_of(args, nargs, "inc", &amount) < 0) {
        return NULL;
    }
    if (amount < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "Counters can only be incremented by non-negative amounts.");
        return NULL;
    }
    self->value += amount;
    Py_RETURN_NONE;
}

/* A gauge moved by `amount` (default 1) times sign: its inc (+1) and dec (-1). */
static PyObject *
gauge_move(ValueObject *self, PyObject *const *args, Py_ssize_t nargs, const char *name,
           double sign)
{
    double amount;
    if (amount_of(args, nargs, name, &amount) < 0) {
        return NULL;
    }
    self->value += sign * amount;
    Py_RETURN_NONE;
}

static PyObject *
gauge_inc(ValueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return gauge_move(self, args, nargs, "inc", 1.0);
}

static PyObject *
gauge_dec(ValueObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return gauge_move(self, args, nargs, "dec", -1.0);
}

static PyMemberDef value_members[] = {
    {"value", T_DOUBLE, offsetof(ValueObject, value), 0, "The series' value."},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef counter_methods[] = {
    {"inc", (PyCFunction)(void (*)(void))counter_inc, METH_FASTCALL,
     "Add `amount` (default 1; ValueError if negative)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef gauge_methods[] = {
    {"inc", (PyCFunction)(void (*)(void))gauge_inc, METH_FASTCALL, "Add `amount` (default 1)."},
    {"dec", (PyCFunction)(void (*)(void))gauge_dec, METH_FASTCALL,
     "Subtract `amount` (default 1)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kraken._speedups.CounterCore",
    .tp_doc = "A counter series' value and inc (kraken/metrics_core.py adds the rest).",
    .tp_basicsize = sizeof(ValueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = counter_methods,
    .tp_members = value_members,
};

static PyTypeObject GaugeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kraken._speedups.GaugeCore",
    .tp_doc = "A gauge series' value, inc and dec (kraken/metrics_core.py adds the rest).",
    .tp_basicsize = sizeof(ValueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = gauge_methods,
    .tp_members = value_members,
};

/* ---- histogram: a count per bucket (not cumulative) and the sum --------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *bounds;     /* _bounds: the tuple of upper bounds (floats, sorted, +Inf last) */
    PyObject *le;         /* _le: their label values */
    double *upper;        /* the bounds as doubles */
    unsigned long long *counts;
    Py_ssize_t n;
    double sum;
} HistogramObject;

static int
histogram_init(HistogramObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"bounds", "le", NULL};
    PyObject *bounds, *le;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:HistogramCore", kwlist,
                                     &PyTuple_Type, &bounds, &le)) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(bounds);
    double *upper = PyMem_Calloc(n ? n : 1, sizeof(double));
    unsigned long long *counts = PyMem_Calloc(n ? n : 1, sizeof(unsigned long long));
    if (upper == NULL || counts == NULL) {
        PyMem_Free(upper);
        PyMem_Free(counts);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        upper[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (upper[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(upper);
            PyMem_Free(counts);
            return -1;
        }
    }
    PyMem_Free(self->upper);
    PyMem_Free(self->counts);
    self->upper = upper;
    self->counts = counts;
    self->n = n;
    self->sum = 0.0;
    Py_INCREF(bounds);
    Py_XSETREF(self->bounds, bounds);
    Py_INCREF(le);
    Py_XSETREF(self->le, le);
    return 0;
}

/* The collector sees the bounds and their labels: a cycle through them (an object in `le`
   that holds the histogram) is then reclaimed instead of leaking. */
static int
histogram_traverse(HistogramObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->bounds);
    Py_VISIT(self->le);
    return 0;
}

static int
histogram_clear(HistogramObject *self)
{
    Py_CLEAR(self->bounds);
    Py_CLEAR(self->le);
    return 0;
}

static void
histogram_dealloc(HistogramObject *self)
{
    PyObject_GC_UnTrack(self);
    histogram_clear(self);
    PyMem_Free(self->upper);
    PyMem_Free(self->counts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
histogram_observe(HistogramObject *self, PyObject *arg)
{
    double amount = PyFloat_AsDouble(arg);
    if (amount == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    self->sum += amount;
    if (amount == amount && self->n > 0) { /* NaN falls in no bucket, as in prometheus_client */
        Py_ssize_t lo = 0, hi = self->n; /* bisect_left: the first bound >= amount */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (self->upper[mid] < amount) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo < self->n) {
            self->counts[lo]++;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
histogram_get_counts(HistogramObject *self, void *closure)
{
    PyObject *counts = PyList_New(self->n);
    for (Py_ssize_t i = 0; counts != NULL && i < self->n; i++) {
        PyObject *count = PyLong_FromUnsignedLongLong(self->counts[i]);
        if (count == NULL) {
            Py_CLEAR(counts);
            break;
        }
        PyList_SET_ITEM(counts, i, count);
    }
    return counts;
}

static PyObject *
histogram_get_tuple(PyObject *value, const char *name)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "histogram not initialised: no %s", name);
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

static PyObject *
histogram_get_bounds(HistogramObject *self, void *closure)
{
    return histogram_get_tuple(self->bounds, "_bounds");
}

static PyObject *
histogram_get_le(HistogramObject *self, void *closure)
{
    return histogram_get_tuple(self->le, "_le");
}

static PyMethodDef histogram_methods[] = {
    {"observe", (PyCFunction)histogram_observe, METH_O,
     "Count `amount` in its bucket (the first bound >= it) and add it to the sum."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef histogram_members[] = {
    {"sum", T_DOUBLE, offsetof(HistogramObject, sum), 0, "The sum of the observed values."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef histogram_getset[] = {
    {"counts", (getter)histogram_get_counts, NULL,
     "A list of the count per bucket (not cumulative), read at a scrape.", NULL},
    {"_bounds", (getter)histogram_get_bounds, NULL, "The upper bounds.", NULL},
    {"_le", (getter)histogram_get_le, NULL, "The bounds as label values.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HistogramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kraken._speedups.HistogramCore",
    .tp_doc = "HistogramCore(bounds, le): a histogram series' counts, sum and observe "
              "(kraken/metrics_core.py adds the rest).",
    .tp_basicsize = sizeof(HistogramObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)histogram_init,
    .tp_dealloc = (destructor)histogram_dealloc,
    .tp_traverse = (traverseproc)histogram_traverse,
    .tp_clear = (inquiry)histogram_clear,
    .tp_methods = histogram_methods,
    .tp_members = histogram_members,
    .tp_getset = histogram_getset,
};

static int
add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0) {
        return -1;
    }
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

int
add_series_types(PyObject *module)
{
    if (add_type(module, &CounterType, "CounterCore") < 0
            || add_type(module, &GaugeType, "GaugeCore") < 0
            || add_type(module, &HistogramType, "HistogramCore") < 0) {
        return -1;
    }
    return 0;
}
