/* embstore's Python package: the lookup calls as a CPython extension module.

   cffi's ABI mode costs about 1.5 µs a call from Python (the call, a cdata per array, the
   checks around them), a fifth of a 512-row lookup; this module takes NumPy arrays through
   the buffer protocol and calls the C API in about 0.3 µs. The package passes it the addresses
   of the C API's functions (from the library cffi loaded), so it links against nothing but
   Python. It is optional: the package's build compiles it when a C compiler and Python's
   headers are there, and the package uses cffi for everything when it is missing.

   The calls take only the direct form: ids of 8-byte integers, offsets int64, weights and out
   float32, all C-contiguous, out of exactly the result's shape. For anything else they return
   NOT_DIRECT and the package takes its general path, which converts or refuses with a message.
   Otherwise they return the C API's status, with the GIL released for the length of the call. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "embstore's _calls module reads '<' buffer formats as native: little-endian machines only"
#endif

#define NOT_DIRECT (-1)

typedef int (*lookup_function)(void *reader, void *table, const uint64_t *ids, size_t count, float *out, uint8_t *found,
                               int missing, size_t *found_count);
typedef int (*pooled_function)(void *reader, void *table, const uint64_t *ids, size_t id_count, const int64_t *offsets,
                               size_t bag_count, const float *weights, int pooling, float *out, int missing,
                               size_t *found_count);

static lookup_function embstore_lookup;
static pooled_function embstore_lookup_pooled;

/* Whether a buffer's items are `itemsize` bytes of one of the struct codes in `codes` (native or
   little-endian order). */
static int has_format(const Py_buffer *buffer, const char *codes, Py_ssize_t itemsize) {
    if (buffer->itemsize != itemsize || buffer->format == NULL) return 0;
    const char *format = buffer->format;
    if (*format == '@' || *format == '=' || *format == '<') format++;
    return format[0] != 0 && format[1] == 0 && strchr(codes, format[0]) != NULL;
}

/* The buffer of `object` as a C-contiguous array of `ndim` dimensions with items of `codes`;
   0 (and no exception) when it is not one. */
static int direct_buffer(PyObject *object, Py_buffer *buffer, int flags, int ndim, const char *codes, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(object, buffer, flags | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (buffer->ndim != ndim || !has_format(buffer, codes, itemsize)) {
        PyBuffer_Release(buffer);
        return 0;
    }
    return 1;
}

/* out: a writable float32 [rows, dimension] array. */
static int direct_output(PyObject *object, Py_buffer *buffer, Py_ssize_t rows, Py_ssize_t dimension) {
    if (!direct_buffer(object, buffer, PyBUF_WRITABLE, 2, "f", 4)) return 0;
    if (buffer->shape[0] != rows || buffer->shape[1] != dimension) {
        PyBuffer_Release(buffer);
        return 0;
    }
    return 1;
}

static int address(PyObject *object, void **pointer) {
    *pointer = PyLong_AsVoidPtr(object);
    return !(*pointer == NULL && PyErr_Occurred());
}

/* init(lookup, lookup_pooled): the addresses of embstore_lookup and embstore_lookup_pooled. */
static PyObject *calls_init(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    void *lookup, *pooled;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "init takes the addresses of embstore_lookup and embstore_lookup_pooled");
        return NULL;
    }
    if (!address(args[0], &lookup) || !address(args[1], &pooled)) return NULL;
    if (lookup == NULL || pooled == NULL) {
        PyErr_SetString(PyExc_ValueError, "init: a function address is 0");
        return NULL;
    }
    embstore_lookup = (lookup_function)lookup;
    embstore_lookup_pooled = (pooled_function)pooled;
    Py_RETURN_NONE;
}

/* lookup(reader, table, dimension, ids, out, missing) -> status, or NOT_DIRECT. reader and table
   are the addresses of the C API's handles (0: not direct, the package says what is wrong). */
static PyObject *calls_lookup(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    void *reader, *table;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "lookup takes reader, table, dimension, ids, out and missing");
        return NULL;
    }
    if (embstore_lookup == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embstore._calls.init was not called");
        return NULL;
    }
    if (!address(args[0], &reader) || !address(args[1], &table)) return NULL;
    Py_ssize_t dimension = PyLong_AsSsize_t(args[2]);
    int missing = (int)PyLong_AsLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (reader == NULL || table == NULL) return PyLong_FromLong(NOT_DIRECT);
    Py_buffer ids, out;
    if (!direct_buffer(args[3], &ids, 0, 1, "QqLl", 8)) return PyLong_FromLong(NOT_DIRECT);
    if (!direct_output(args[4], &out, ids.shape[0], dimension)) {
        PyBuffer_Release(&ids);
        return PyLong_FromLong(NOT_DIRECT);
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = embstore_lookup(reader, table, (const uint64_t *)ids.buf, (size_t)ids.shape[0], (float *)out.buf, NULL, missing, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&ids);
    return PyLong_FromLong(status);
}

/* lookup_pooled(reader, table, dimension, ids, offsets, weights or None, pooling, out, missing)
   -> status, or NOT_DIRECT. offsets: bags + 1 int64 entries; out: float32 [bags, dimension]. */
static PyObject *calls_lookup_pooled(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    void *reader, *table;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "lookup_pooled takes reader, table, dimension, ids, offsets, weights, pooling, out and missing");
        return NULL;
    }
    if (embstore_lookup_pooled == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embstore._calls.init was not called");
        return NULL;
    }
    if (!address(args[0], &reader) || !address(args[1], &table)) return NULL;
    Py_ssize_t dimension = PyLong_AsSsize_t(args[2]);
    int pooling = (int)PyLong_AsLong(args[6]);
    int missing = (int)PyLong_AsLong(args[8]);
    if (PyErr_Occurred()) return NULL;
    if (reader == NULL || table == NULL) return PyLong_FromLong(NOT_DIRECT);
    Py_buffer ids, offsets, weights, out;
    int has_weights = args[5] != Py_None, direct = 0;
    if (direct_buffer(args[3], &ids, 0, 1, "QqLl", 8)) {
        if (direct_buffer(args[4], &offsets, 0, 1, "ql", 8)) {
            if (offsets.shape[0] >= 1 && (!has_weights || direct_buffer(args[5], &weights, 0, 1, "f", 4))) {
                if (!has_weights || weights.shape[0] == ids.shape[0]) {
                    direct = direct_output(args[7], &out, offsets.shape[0] - 1, dimension);
                }
                if (!direct && has_weights) PyBuffer_Release(&weights);
            }
            if (!direct) PyBuffer_Release(&offsets);
        }
        if (!direct) PyBuffer_Release(&ids);
    }
    if (!direct) return PyLong_FromLong(NOT_DIRECT);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = embstore_lookup_pooled(reader, table, (const uint64_t *)ids.buf, (size_t)ids.shape[0], (const int64_t *)offsets.buf,
                                    (size_t)offsets.shape[0] - 1, has_weights ? (const float *)weights.buf : NULL, pooling,
                                    (float *)out.buf, missing, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    if (has_weights) PyBuffer_Release(&weights);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&ids);
    return PyLong_FromLong(status);
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)(void (*)(void))calls_init, METH_FASTCALL, "init(lookup, lookup_pooled): the C API's function addresses"},
    {"lookup", (PyCFunction)(void (*)(void))calls_lookup, METH_FASTCALL, "lookup(reader, table, dimension, ids, out, missing) -> status"},
    {"lookup_pooled", (PyCFunction)(void (*)(void))calls_lookup_pooled, METH_FASTCALL,
     "lookup_pooled(reader, table, dimension, ids, offsets, weights, pooling, out, missing) -> status"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef calls_module = {
    PyModuleDef_HEAD_INIT, "_calls", "embstore's lookup calls through the buffer protocol (see _calls.c)", -1, methods,
};

PyMODINIT_FUNC PyInit__calls(void) {
    PyObject *module = PyModule_Create(&calls_module);
    if (module != NULL && PyModule_AddIntConstant(module, "NOT_DIRECT", NOT_DIRECT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
