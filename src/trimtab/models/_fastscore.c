/*
 * trimtab's live scoring in C: one user's attributes -> feature vector -> score, in one call.
 *
 * Compiled on first use by trimtab.models.native with the system's C compiler into a cache
 * directory (never at install time); without a compiler trimtab scores with numpy instead.
 *
 * Reader: the columns of trimtab.models.columns, as "ops" built in Python. Each op reads one
 * attribute path (one or two keys) from a plain dict; anything the fast path does not mirror
 * exactly (an attribute dict that is not a dict, a map of non-floats under sum(), a non-text
 * value under path=value) is handed to the op's Python reader, so values equal
 * Columns.vector() by construction.
 *
 * Forest: gradient-boosted trees in QuickScorer's form (Lucchese et al., SIGIR 2015; see
 * trimtab.models.trees): nodes sorted by feature and threshold, so only the nodes whose test
 * fails are visited, with no data-dependent walk; LightGBM's missing-value rules; leaves
 * summed in tree order per output. Dense: a ReLU network (a linear model is one layer).
 * Mixture: Gaussian components in the folded form of trimtab.models.segments.
 *
 * No -ffast-math: the arithmetic is IEEE double in a fixed order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { COL_NUMBER = 0, COL_SUM = 1, COL_ONEHOT = 2, COL_EQUALS = 3, COL_PYTHON = 4 };
enum { LINK_IDENTITY = 0, LINK_SIGMOID = 1, LINK_EXP = 2, LINK_SOFTMAX = 3 };
#define ZERO_THRESHOLD 1e-35
#define EXP_CAP 700.0

typedef struct {
    int kind, log, onehot; /* onehot: the reader gives a position (path=*), not a value */
    Py_ssize_t pos;
    PyObject *k1, *k2;    /* k2 NULL for a one-key path */
    PyObject *extra;      /* ONEHOT: dict text -> position; EQUALS: the wanted text */
    PyObject *fallback;   /* Python reader: attrs -> float (ONEHOT: position or None) */
} Op;

typedef struct {
    Py_ssize_t n_ops, width;
    Op *ops;
    PyObject *keep; /* the ops tuple, owning every object the ops borrow */
} Reader;

static void reader_free(Reader *r) {
    PyMem_Free(r->ops);
    r->ops = NULL;
    Py_CLEAR(r->keep);
}

static int reader_init(Reader *r, PyObject *ops, Py_ssize_t width) {
    if (!PyTuple_Check(ops)) {
        PyErr_SetString(PyExc_TypeError, "ops must be a tuple");
        return -1;
    }
    r->n_ops = PyTuple_GET_SIZE(ops);
    r->width = width;
    r->ops = PyMem_Calloc(r->n_ops ? r->n_ops : 1, sizeof(Op));
    if (!r->ops) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < r->n_ops; i++) {
        PyObject *t = PyTuple_GET_ITEM(ops, i);
        Op *op = &r->ops[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 7) {
            PyErr_SetString(PyExc_TypeError, "an op is a 7-tuple");
            return -1;
        }
        op->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
        op->log = PyObject_IsTrue(PyTuple_GET_ITEM(t, 1));
        op->pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 2));
        op->k1 = PyTuple_GET_ITEM(t, 3);
        op->k2 = PyTuple_GET_ITEM(t, 4) == Py_None ? NULL : PyTuple_GET_ITEM(t, 4);
        op->extra = PyTuple_GET_ITEM(t, 5);
        op->fallback = PyTuple_GET_ITEM(t, 6);
        if (PyErr_Occurred()) return -1;
        op->onehot = PyDict_Check(op->extra);
        if (op->kind < COL_NUMBER || op->kind > COL_PYTHON || !PyCallable_Check(op->fallback) ||
            (!op->onehot && (op->pos < 0 || op->pos >= width)) ||
            (op->kind == COL_ONEHOT && !op->onehot) || !PyUnicode_Check(op->k1) ||
            (op->k2 != NULL && !PyUnicode_Check(op->k2)) ||
            (op->kind == COL_EQUALS && !PyUnicode_Check(op->extra))) {
            PyErr_SetString(PyExc_ValueError, "a malformed op");
            return -1;
        }
    }
    Py_INCREF(ops);
    r->keep = ops;
    return 0;
}

/* trimtab.models.columns._number for the types it names; 1 when handled. */
static int as_number(PyObject *v, double *x) {
    if (v == NULL || v == Py_None || v == Py_False) {
        *x = 0.0;
        return 1;
    }
    if (v == Py_True) {
        *x = 1.0;
        return 1;
    }
    if (PyFloat_Check(v)) {
        *x = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (PyLong_Check(v)) {
        *x = PyLong_AsDouble(v);
        return *x == -1.0 && PyErr_Occurred() ? -1 : 1;
    }
    return 0;
}

static double log_column(double x) { return x > 0.0 ? log1p(x) : (x != x ? x : 0.0); }

static int call_float(PyObject *fn, PyObject *attrs, double *x) {
    PyObject *r = PyObject_CallOneArg(fn, attrs);
    if (!r) return -1;
    *x = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*x == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* trimtab.features.SummedMap (registered by summed_map()): a dict subclass whose __slots__
   member `total` is sum(map.values()), kept as the map is added to. */
static PyTypeObject *summed_type = NULL;
static Py_ssize_t summed_offset = 0;

/* A plain dict or a SummedMap: the maps the fast paths read (the Python readers' own test) */
static int is_map(PyObject *v) { return PyDict_CheckExact(v) || Py_TYPE(v) == summed_type; }

/* A SummedMap's kept sum as a double; 1 when there is one (a float, or an int as float()
   rounds it), 0 when only Python can say. */
static int summed_total(PyObject *map, double *x) {
    PyObject *total = *(PyObject **)((char *)map + summed_offset);
    if (total == NULL) return 0;
    if (PyFloat_CheckExact(total)) {
        *x = PyFloat_AS_DOUBLE(total);
        return 1;
    }
    if (PyLong_CheckExact(total)) {
        *x = PyLong_AsDouble(total);
        if (*x == -1.0 && PyErr_Occurred()) {
            PyErr_Clear(); /* beyond a double: Python raises it as it would */
            return 0;
        }
        return 1;
    }
    return 0;
}

/* The value at a two-key path; 1 found (maybe NULL), 0 when only Python can say. */
static int lookup2(PyObject *first, PyObject *k2, PyObject **out) {
    if (first == NULL || first == Py_None) {
        *out = NULL;
        return 1;
    }
    if (is_map(first)) {
        *out = PyDict_GetItemWithError(first, k2);
        return (*out == NULL && PyErr_Occurred()) ? -1 : 1;
    }
    if (PyFloat_CheckExact(first) || PyLong_CheckExact(first) || PyUnicode_CheckExact(first) ||
        PyBool_Check(first)) {
        *out = NULL; /* not a mapping: nothing there */
        return 1;
    }
    return 0;
}

/* float(sum(map.values())) for a map of exact ints whose running sum stays within ±2^62
   (Python's sum is then the same integer, and float() and the cast both round it to the
   nearest double); 0 otherwise (a float, bool or text among them, or larger numbers). */
static int sum_ints(PyObject *map, double *x) {
    Py_ssize_t p = 0;
    PyObject *key, *item;
    long long total = 0;
    const long long cap = 1LL << 62;
    while (PyDict_Next(map, &p, &key, &item)) {
        if (!PyLong_CheckExact(item)) return 0;
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || v > cap || v < -cap) {
            PyErr_Clear();
            return 0;
        }
        total += v; /* |total| <= 2^62 + 2^62: no overflow before the check below */
        if (total > cap || total < -cap) return 0;
    }
    *x = (double)total;
    return 1;
}

static int reader_fill(Reader *r, PyObject *attrs, double *out) {
    memset(out, 0, sizeof(double) * (size_t)r->width);
    int plain = PyDict_CheckExact(attrs);
    PyObject *last_key = NULL, *last_value = NULL; /* taste_share.a, taste_share.b: one lookup */
    for (Py_ssize_t i = 0; i < r->n_ops; i++) {
        Op *op = &r->ops[i];
        double x = 0.0;
        PyObject *v = NULL;
        int ok = 0;
        if (!plain || op->kind == COL_PYTHON) goto python;
        if (op->k1 == last_key) {
            v = last_value; /* borrowed; nothing ran in between that could change attrs */
        } else {
            v = PyDict_GetItemWithError(attrs, op->k1);
            if (v == NULL && PyErr_Occurred()) return -1;
            last_key = op->k1;
            last_value = v;
        }
        if (op->k2 != NULL) {
            if (op->kind == COL_NUMBER) { /* columns' shallow reader: exact dicts only */
                v = (v != NULL && is_map(v)) ? PyDict_GetItemWithError(v, op->k2) : NULL;
                if (v == NULL && PyErr_Occurred()) return -1;
            } else {
                PyObject *inner;
                ok = lookup2(v, op->k2, &inner);
                if (ok < 0) return -1;
                if (!ok) goto python;
                v = inner;
            }
        }
        switch (op->kind) {
        case COL_NUMBER:
            ok = as_number(v, &x);
            if (ok < 0) return -1;
            if (!ok) x = 0.0; /* text, lists, maps count 0 */
            out[op->pos] = op->log ? log_column(x) : x;
            continue;
        case COL_SUM:
            if (v != NULL && Py_TYPE(v) == summed_type) { /* its sum kept: no walk */
                if (!summed_total(v, &x)) goto python;
            } else if (v != NULL && PyDict_CheckExact(v)) {
                Py_ssize_t p = 0;
                PyObject *key, *item;
                x = 0.0;
                if (PyDict_GET_SIZE(v) > 0 && sum_ints(v, &x)) {
                    /* counts (click_count's maps): summed exactly, as Python's int sum */
                } else {
                    while (PyDict_Next(v, &p, &key, &item)) {
                        if (!PyFloat_CheckExact(item)) goto python; /* mixed, bools, text */
                        x += PyFloat_AS_DOUBLE(item);
                    }
                }
            } else {
                ok = as_number(v, &x);
                if (ok < 0) return -1;
                if (!ok) {
                    if (PyUnicode_CheckExact(v)) x = 0.0;
                    else goto python;
                }
            }
            out[op->pos] = op->log ? log_column(x) : x;
            continue;
        case COL_EQUALS:
            if (v == NULL || v == Py_None) continue;
            if (!PyUnicode_CheckExact(v)) goto python;
            ok = PyUnicode_Compare(v, op->extra);
            if (ok == -1 && PyErr_Occurred()) return -1;
            out[op->pos] = ok == 0 ? 1.0 : 0.0;
            continue;
        case COL_ONEHOT:
            if (v == NULL || v == Py_None) continue;
            if (!PyUnicode_CheckExact(v)) goto python;
            {
                PyObject *j = PyDict_GetItemWithError(op->extra, v);
                if (j == NULL) {
                    if (PyErr_Occurred()) return -1;
                    continue;
                }
                Py_ssize_t at = PyLong_AsSsize_t(j);
                if (at < 0 || at >= r->width) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "a one-hot position outside the vector");
                    return -1;
                }
                out[at] = 1.0;
            }
            continue;
        default:
            break;
        }
    python:
        last_key = NULL; /* Python code runs: read afresh after it */
        if (op->onehot) {
            PyObject *j = PyObject_CallOneArg(op->fallback, attrs);
            if (!j) return -1;
            if (j != Py_None) {
                Py_ssize_t at = PyLong_AsSsize_t(j);
                Py_DECREF(j);
                if (at < 0 || at >= r->width) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "a one-hot position outside the vector");
                    return -1;
                }
                out[at] = 1.0;
            } else {
                Py_DECREF(j);
            }
        } else {
            if (call_float(op->fallback, attrs, &x) < 0) return -1;
            out[op->pos] = x;
        }
    }
    return 0;
}

static int all_finite(const double *x, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static PyObject *vector_list(const double *x, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble(x[i]);
        if (!f) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, f);
    }
    return list;
}

/* A sequence of numbers into x[0..n) (for predict on a ready vector). */
static int read_sequence(PyObject *seq, double *x, Py_ssize_t n) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of numbers");
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "expected %zd values, got %zd", n,
                     PySequence_Fast_GET_SIZE(fast));
        Py_DECREF(fast);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        x[i] = PyFloat_AsDouble(items[i]);
        if (x[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static void apply_link(double *raw, Py_ssize_t n, int link, double scale) {
    if (link == LINK_SOFTMAX) {
        double top = raw[0], total = 0.0;
        for (Py_ssize_t j = 1; j < n; j++)
            if (raw[j] > top) top = raw[j];
        for (Py_ssize_t j = 0; j < n; j++) {
            raw[j] = exp(raw[j] - top);
            total += raw[j];
        }
        for (Py_ssize_t j = 0; j < n; j++) raw[j] /= total;
    } else {
        for (Py_ssize_t j = 0; j < n; j++) {
            if (link == LINK_SIGMOID) raw[j] = 1.0 / (1.0 + exp(-scale * raw[j]));
            else if (link == LINK_EXP) raw[j] = exp(raw[j] < EXP_CAP ? raw[j] : EXP_CAP);
        }
    }
}

static PyObject *outputs(double *raw, Py_ssize_t n, int link, double scale) {
    apply_link(raw, n, link, scale);
    if (n == 1) return PyFloat_FromDouble(raw[0]);
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *f = PyFloat_FromDouble(raw[j]);
        if (!f) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, j, f);
    }
    return t;
}

/* A bytes object of exactly n items of `size` bytes; its buffer is borrowed from `keep`. */
static const void *array_of(PyObject *b, Py_ssize_t n, size_t size, const char *name) {
    if (!PyBytes_Check(b) || (size_t)PyBytes_GET_SIZE(b) != (size_t)n * size) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items", name, n);
        return NULL;
    }
    return PyBytes_AS_STRING(b);
}

/* ---------------------------------------------------------------------------- Model */

enum { KIND_FOREST = 0, KIND_DENSE = 1, KIND_MIXTURE = 2 };
#define MAX_LAYERS 16

typedef struct {
    PyObject_HEAD
    int kind, link;
    double scale;
    Reader reader;
    Py_ssize_t n_in, n_out;
    double *x, *raw, *h1, *h2; /* scratch: input, outputs, two hidden buffers */
    PyObject *keep;            /* the arrays (bytes) the pointers below read */
    /* forest, QuickScorer's order: nodes by feature then threshold, a leaf mask each */
    Py_ssize_t n_nodes, n_trees;
    const int32_t *fstart, *tree, *leaf_offset, *leaf_count, *tree_out, *bstart, *rstart;
    const double *thr, *leaf, *constant, *bound;
    const uint64_t *mask, *table;
    Py_ssize_t n_rows;
    const uint8_t *fspecial, *defleft, *miss;
    uint64_t *bits;
    int narrow; /* every tree has at most 32 leaves: 32-bit copies of the masks serve */
    uint32_t *bits32, *table32, *mask32;
    int32_t *frow; /* per feature: the prefix-table row to apply (or how to test its nodes) */
    /* dense */
    int n_layers;
    Py_ssize_t sizes[MAX_LAYERS + 1];
    const double *w[MAX_LAYERS], *b[MAX_LAYERS];
    /* mixture: k components of d dims, y = x A - c (A is d x kd), logp = bias - |y|^2 / 2 */
    Py_ssize_t k, d;
    const double *a, *c, *bias;
} Model;

static void model_dealloc(Model *m) {
    reader_free(&m->reader);
    PyMem_Free(m->x);
    PyMem_Free(m->raw);
    PyMem_Free(m->h1);
    PyMem_Free(m->h2);
    PyMem_Free(m->bits);
    PyMem_Free(m->bits32);
    PyMem_Free(m->table32);
    PyMem_Free(m->mask32);
    PyMem_Free(m->frow);
    Py_XDECREF(m->keep);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int go_left_full(const Model *m, Py_ssize_t i, double v) {
    uint8_t miss = m->miss[i];
    if (miss == 2) return (v != v) ? m->defleft[i] : (v <= m->thr[i]);
    if (v != v) v = 0.0;
    if (miss == 1 && v >= -ZERO_THRESHOLD && v <= ZERO_THRESHOLD) return m->defleft[i];
    return v <= m->thr[i];
}

/* QuickScorer: every node whose test fails clears the leaves of its left subtree from its
   tree's bits; the exit leaf is the lowest bit left. Returns -1 on inconsistent masks. */
static void and_row(uint64_t *restrict bits, const uint64_t *restrict row, Py_ssize_t n) {
    for (Py_ssize_t t = 0; t < n; t++) bits[t] &= row[t]; /* vectorised */
}

enum { ROW_NONE = -1, ROW_NODES = -2, ROW_SCAN = -3 };

/* 1. per feature, the table row to apply: the searches are independent of each other, so the
   CPU overlaps them */
static void forest_rows(const Model *m, const double *x, int32_t *restrict rows) {
    const Py_ssize_t n_in = m->n_in;
    for (Py_ssize_t f = 0; f < n_in; f++) {
        int32_t lo = m->fstart[f], hi = m->fstart[f + 1];
        double v = x[f];
        int nan = v != v;
        rows[f] = ROW_NONE;
        if (lo == hi) continue;
        if (m->fspecial[f] && (nan || (v >= -ZERO_THRESHOLD && v <= ZERO_THRESHOLD))) {
            rows[f] = ROW_NODES;
            continue;
        }
        if (nan) v = 0.0; /* LightGBM reads NaN as 0 where no node handles it */
        int32_t blo = m->bstart[f], n_bounds = m->bstart[f + 1] - blo;
        if (n_bounds == 0) { /* no prefix table: QuickScorer's scan */
            rows[f] = ROW_SCAN;
            continue;
        }
        /* how many distinct thresholds lie below v: those nodes fail */
        const double *bound = m->bound + blo, *base = bound;
        int32_t span = n_bounds;
        while (span > 1) { /* branch-free lower bound: the data decide no jumps */
            int32_t half = span / 2;
            base = base[half] < v ? base + half : base;
            span -= half;
        }
        int32_t below = (int32_t)(base - bound) + (*base < v);
        if (below) rows[f] = m->rstart[f] + below - 1;
    }
}

#define FOREST_LEAVES(NAME, WORD, BITS, TABLE, MASK, AND_ROW, WIDTH)                        \
    static int NAME(Model *m, const double *x, double *raw) {                                 \
        WORD *restrict bits = m->BITS;                                                        \
        const int32_t *rows = m->frow;                                                        \
        const Py_ssize_t n_trees = m->n_trees, n_in = m->n_in;                                \
        forest_rows(m, x, m->frow);                                                           \
        for (Py_ssize_t t = 0; t < n_trees; t++) bits[t] = ~(WORD)0;                          \
        for (Py_ssize_t f = 0; f < n_in; f++) {                                               \
            int32_t row = rows[f];                                                            \
            if (row >= 0) {                                                                   \
                AND_ROW(bits, m->TABLE + (size_t)row * (size_t)n_trees, n_trees);             \
                continue;                                                                     \
            }                                                                                 \
            if (row == ROW_NONE) continue;                                                    \
            int32_t lo = m->fstart[f], hi = m->fstart[f + 1];                                 \
            double v = x[f];                                                                  \
            if (row == ROW_NODES) {                                                           \
                for (int32_t i = lo; i < hi; i++)                                             \
                    if (!go_left_full(m, i, v)) bits[m->tree[i]] &= (WORD)m->MASK[i];         \
            } else {                                                                          \
                if (v != v) v = 0.0;                                                          \
                for (int32_t i = lo; i < hi && v > m->thr[i]; i++)                            \
                    bits[m->tree[i]] &= (WORD)m->MASK[i];                                     \
            }                                                                                 \
        }                                                                                     \
        /* 3. the exit leaves (the lowest bit left), summed in tree order (as LightGBM) */    \
        if (m->n_out == 1) {                                                                  \
            double total = 0.0;                                                               \
            for (Py_ssize_t t = 0; t < n_trees; t++) {                                        \
                WORD b = bits[t];                                                             \
                int at = b ? __builtin_ctzll((unsigned long long)b) : WIDTH;                  \
                if (at >= m->leaf_count[t]) return -1;                                        \
                total += m->leaf[m->leaf_offset[t] + at];                                     \
            }                                                                                 \
            raw[0] = total + m->constant[0];                                                  \
            return 0;                                                                         \
        }                                                                                     \
        for (Py_ssize_t j = 0; j < m->n_out; j++) raw[j] = 0.0;                               \
        for (Py_ssize_t t = 0; t < n_trees; t++) {                                            \
            WORD b = bits[t];                                                                 \
            int at = b ? __builtin_ctzll((unsigned long long)b) : WIDTH;                      \
            if (at >= m->leaf_count[t]) return -1;                                            \
            raw[m->tree_out[t]] += m->leaf[m->leaf_offset[t] + at];                           \
        }                                                                                     \
        for (Py_ssize_t j = 0; j < m->n_out; j++) raw[j] += m->constant[j];                   \
        return 0;                                                                             \
    }

static void and_row32(uint32_t *restrict bits, const uint32_t *restrict row, Py_ssize_t n) {
    for (Py_ssize_t t = 0; t < n; t++) bits[t] &= row[t]; /* vectorised */
}

FOREST_LEAVES(forest_raw64, uint64_t, bits, table, mask, and_row, 64)
/* trees of at most 32 leaves (LightGBM's default 31): half the words to read and AND */
FOREST_LEAVES(forest_raw32, uint32_t, bits32, table32, mask32, and_row32, 32)

/* QuickScorer: every node whose test fails clears the leaves of its left subtree from its
   tree's bits; the exit leaf is the lowest bit left. Returns -1 on inconsistent masks. */
static int forest_raw(Model *m, const double *x, double *raw) {
    return m->narrow ? forest_raw32(m, x, raw) : forest_raw64(m, x, raw);
}

#define BLOCK 8
/* o = h W (W row-major, n_in x n_out): each output sums its inputs in order (i = 0, 1, …)
   from 0, the same IEEE operations whichever loop computes it; BLOCK outputs at a time stay
   in registers. */
static void matvec(const double *h, Py_ssize_t n_in, const double *w, Py_ssize_t n_out,
                   double *o) {
    Py_ssize_t j0 = 0;
    for (; j0 + BLOCK <= n_out; j0 += BLOCK) {
        double acc[BLOCK] = {0.0};
        for (Py_ssize_t i = 0; i < n_in; i++) {
            double hi = h[i];
            const double *row = w + i * n_out + j0;
            for (int jj = 0; jj < BLOCK; jj++) acc[jj] += hi * row[jj];
        }
        for (int jj = 0; jj < BLOCK; jj++) o[j0 + jj] = acc[jj];
    }
    for (Py_ssize_t j = j0; j < n_out; j++) o[j] = 0.0;
    for (Py_ssize_t i = 0; i < n_in && j0 < n_out; i++) { /* the outputs left over */
        double hi = h[i];
        const double *row = w + i * n_out;
        for (Py_ssize_t j = j0; j < n_out; j++) o[j] += hi * row[j];
    }
}

static void dense_raw(Model *m, const double *x, double *raw) {
    const double *h = x;
    for (int l = 0; l < m->n_layers; l++) {
        Py_ssize_t n_in = m->sizes[l], n_out = m->sizes[l + 1];
        int last = l == m->n_layers - 1;
        double *o = last ? raw : (l % 2 == 0 ? m->h1 : m->h2);
        const double *w = m->w[l], *b = m->b[l];
        matvec(h, n_in, w, n_out, o);
        for (Py_ssize_t j = 0; j < n_out; j++) {
            o[j] += b[j];
            if (!last && o[j] < 0.0) o[j] = 0.0; /* NaN stays NaN, as np.maximum */
        }
        h = o;
    }
}

/* The most likely component and its posterior. */
static void mixture_best(Model *m, const double *x, Py_ssize_t *best_out, double *p_out) {
    Py_ssize_t kd = m->k * m->d, best = 0;
    double *y = m->h1, top = -INFINITY, total = 0.0;
    matvec(x, m->d, m->a, kd, y); /* y = x A − c, as numpy computes it */
    for (Py_ssize_t j = 0; j < kd; j++) y[j] -= m->c[j];
    for (Py_ssize_t q = 0; q < m->k; q++) {
        double s = 0.0;
        for (Py_ssize_t l = 0; l < m->d; l++) s += y[q * m->d + l] * y[q * m->d + l];
        m->raw[q] = m->bias[q] - 0.5 * s;
        if (m->raw[q] > top) {
            top = m->raw[q];
            best = q;
        }
    }
    for (Py_ssize_t q = 0; q < m->k; q++) total += exp(m->raw[q] - top);
    *best_out = best;
    *p_out = 1.0 / total;
}

static PyObject *mixture_assign(Model *m, const double *x) {
    Py_ssize_t best;
    double p;
    mixture_best(m, x, &best, &p);
    return Py_BuildValue("(nd)", best, p);
}

static PyObject *model_evaluate(Model *m, const double *x) {
    if (m->kind == KIND_MIXTURE) return mixture_assign(m, x);
    if (m->kind == KIND_FOREST) {
        if (forest_raw(m, x, m->raw) < 0) {
            PyErr_SetString(PyExc_ValueError, "inconsistent tree masks: no exit leaf");
            return NULL;
        }
    } else {
        dense_raw(m, x, m->raw);
    }
    return outputs(m->raw, m->n_out, m->link, m->scale);
}

/* score(attrs): the model's output for one user's attributes; None when an input is not finite */
static PyObject *model_score(Model *m, PyObject *attrs) {
    if (reader_fill(&m->reader, attrs, m->x) < 0) return NULL;
    if (!all_finite(m->x, m->n_in)) Py_RETURN_NONE;
    return model_evaluate(m, m->x);
}

/* predict(vector): the output for a ready vector (NaN allowed: trees route it) */
static PyObject *model_predict(Model *m, PyObject *seq) {
    if (read_sequence(seq, m->x, m->n_in) < 0) return NULL;
    return model_evaluate(m, m->x);
}

/* vector(attrs): the columns as the reader sees them (tests compare with Columns.vector) */
static PyObject *model_vector(Model *m, PyObject *attrs) {
    if (reader_fill(&m->reader, attrs, m->x) < 0) return NULL;
    return vector_list(m->x, m->n_in);
}

static PyMethodDef model_methods[] = {
    {"score", (PyCFunction)model_score, METH_O, "output for one user's attributes, or None"},
    {"predict", (PyCFunction)model_predict, METH_O, "output for a ready vector"},
    {"vector", (PyCFunction)model_vector, METH_O, "the input vector read from attributes"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastscore.Model",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = model_methods,
};

static Model *model_new(PyObject *ops, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t scratch,
                        PyObject *keep) {
    if (n_in < 1 || n_out < 1 || scratch < 1) {
        PyErr_SetString(PyExc_ValueError, "sizes must be positive");
        return NULL;
    }
    Model *m = PyObject_New(Model, &ModelType);
    if (!m) return NULL;
    memset((char *)m + sizeof(PyObject), 0, sizeof(Model) - sizeof(PyObject));
    m->n_in = n_in;
    m->n_out = n_out;
    m->x = PyMem_Calloc((size_t)n_in, sizeof(double));
    m->raw = PyMem_Calloc((size_t)(n_out > scratch ? n_out : scratch), sizeof(double));
    m->h1 = PyMem_Calloc((size_t)scratch, sizeof(double));
    m->h2 = PyMem_Calloc((size_t)scratch, sizeof(double));
    Py_INCREF(keep);
    m->keep = keep;
    if (!m->x || !m->raw || !m->h1 || !m->h2) {
        Py_DECREF(m);
        PyErr_NoMemory();
        return NULL;
    }
    if (reader_init(&m->reader, ops, n_in) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* forest(ops, n_in, n_out, link, scale, feature_start, feature_special, threshold, tree, mask,
 *        missing, default_left, leaf_offset, leaf_count, tree_output, leaf_value, constants,
 *        bound_start, bound, row_start, table)
 * — int32 / uint8 / float64 / uint64 arrays as bytes (TreeEnsemble.scan_form) */
static PyObject *make_forest(PyObject *self, PyObject *args) {
    PyObject *ops, *fstart, *fspecial, *thr, *tree, *mask, *miss, *defleft, *loff, *lcount,
        *tree_out, *leaf, *constant, *bstart, *bound, *rstart, *table;
    Py_ssize_t n_in, n_out;
    int link;
    double scale;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nnidOOOOOOOOOOOOOOOO", &PyTuple_Type, &ops, &n_in, &n_out,
                          &link, &scale, &fstart, &fspecial, &thr, &tree, &mask, &miss, &defleft,
                          &loff, &lcount, &tree_out, &leaf, &constant, &bstart, &bound, &rstart,
                          &table))
        return NULL;
    Model *m = model_new(ops, n_in, n_out, 1, args);
    if (!m) return NULL;
    m->kind = KIND_FOREST;
    m->link = link;
    m->scale = scale;
    Py_ssize_t nodes = PyBytes_Check(thr) ? PyBytes_GET_SIZE(thr) / 8 : 0;
    Py_ssize_t trees = PyBytes_Check(loff) ? PyBytes_GET_SIZE(loff) / 4 : 0;
    Py_ssize_t leaves = PyBytes_Check(leaf) ? PyBytes_GET_SIZE(leaf) / 8 : 0;
    m->n_nodes = nodes;
    m->n_trees = trees;
    if (!(m->fstart = array_of(fstart, n_in + 1, 4, "feature_start")) ||
        !(m->fspecial = array_of(fspecial, n_in, 1, "feature_special")) ||
        !(m->thr = array_of(thr, nodes, 8, "threshold")) ||
        !(m->tree = array_of(tree, nodes, 4, "tree")) ||
        !(m->mask = array_of(mask, nodes, 8, "mask")) ||
        !(m->miss = array_of(miss, nodes, 1, "missing")) ||
        !(m->defleft = array_of(defleft, nodes, 1, "default_left")) ||
        !(m->leaf_offset = array_of(loff, trees, 4, "leaf_offset")) ||
        !(m->leaf_count = array_of(lcount, trees, 4, "leaf_count")) ||
        !(m->tree_out = array_of(tree_out, trees, 4, "tree_output")) ||
        !(m->leaf = array_of(leaf, leaves, 8, "leaf_value")) ||
        !(m->constant = array_of(constant, n_out, 8, "constants")) ||
        !(m->bstart = array_of(bstart, n_in + 1, 4, "bound_start")) ||
        !(m->rstart = array_of(rstart, n_in, 4, "row_start"))) {
        Py_DECREF(m);
        return NULL;
    }
    Py_ssize_t n_bounds = m->bstart[n_in];
    m->n_rows = trees ? (PyBytes_Check(table) ? PyBytes_GET_SIZE(table) / 8 / trees : 0) : 0;
    if (!(m->bound = array_of(bound, n_bounds, 8, "bound")) ||
        !(m->table = array_of(table, m->n_rows * trees, 8, "table"))) {
        Py_DECREF(m);
        return NULL;
    }
    if (m->bstart[0] != 0) goto bad;
    for (Py_ssize_t f = 0; f < n_in; f++) {
        int32_t nb = m->bstart[f + 1] - m->bstart[f];
        if (nb < 0 || (nb > 0 && (m->rstart[f] < 0 || m->rstart[f] + nb > m->n_rows))) goto bad;
    }
    m->bits = PyMem_Calloc((size_t)(trees ? trees : 1), sizeof(uint64_t));
    m->frow = PyMem_Calloc((size_t)n_in, sizeof(int32_t));
    if (!m->bits || !m->frow) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    if (m->fstart[0] != 0 || m->fstart[n_in] != nodes) goto bad;
    for (Py_ssize_t f = 0; f < n_in; f++)
        if (m->fstart[f + 1] < m->fstart[f]) goto bad;
    for (Py_ssize_t i = 0; i < nodes; i++)
        if (m->tree[i] < 0 || m->tree[i] >= trees || m->miss[i] > 2) goto bad;
    for (Py_ssize_t t = 0; t < trees; t++)
        if (m->tree_out[t] < 0 || m->tree_out[t] >= n_out || m->leaf_offset[t] < 0 ||
            m->leaf_count[t] < 1 || m->leaf_count[t] > 64 ||
            (Py_ssize_t)m->leaf_offset[t] + m->leaf_count[t] > leaves)
            goto bad;
    if (link < LINK_IDENTITY || link > LINK_SOFTMAX) goto bad;
    m->narrow = 1;
    for (Py_ssize_t t = 0; t < trees; t++) m->narrow &= m->leaf_count[t] <= 32;
    if (m->narrow) {
        size_t cells = (size_t)m->n_rows * (size_t)trees;
        m->bits32 = PyMem_Calloc((size_t)(trees ? trees : 1), sizeof(uint32_t));
        m->table32 = PyMem_Malloc((cells ? cells : 1) * sizeof(uint32_t));
        m->mask32 = PyMem_Malloc((size_t)(nodes ? nodes : 1) * sizeof(uint32_t));
        if (!m->bits32 || !m->table32 || !m->mask32) {
            Py_DECREF(m);
            return PyErr_NoMemory();
        }
        /* leaves 32..63 do not exist: their bits never decide the exit leaf */
        for (size_t c = 0; c < cells; c++) m->table32[c] = (uint32_t)m->table[c];
        for (Py_ssize_t i = 0; i < nodes; i++) m->mask32[i] = (uint32_t)m->mask[i];
    }
    return (PyObject *)m;
bad:
    Py_DECREF(m);
    PyErr_SetString(PyExc_ValueError, "inconsistent tree arrays");
    return NULL;
}

/* dense(ops, link, sizes tuple, weights tuple of bytes (row-major in x out), biases tuple) */
static PyObject *make_dense(PyObject *self, PyObject *args) {
    PyObject *ops, *sizes, *ws, *bs;
    int link;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!iO!O!O!", &PyTuple_Type, &ops, &link, &PyTuple_Type, &sizes,
                          &PyTuple_Type, &ws, &PyTuple_Type, &bs))
        return NULL;
    Py_ssize_t n_layers = PyTuple_GET_SIZE(ws);
    if (n_layers < 1 || n_layers > MAX_LAYERS || PyTuple_GET_SIZE(bs) != n_layers ||
        PyTuple_GET_SIZE(sizes) != n_layers + 1 || link < LINK_IDENTITY || link > LINK_SOFTMAX) {
        PyErr_SetString(PyExc_ValueError, "inconsistent layers");
        return NULL;
    }
    Py_ssize_t dims[MAX_LAYERS + 1], widest = 1;
    for (Py_ssize_t l = 0; l <= n_layers; l++) {
        dims[l] = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, l));
        if (dims[l] < 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a layer of no units");
            return NULL;
        }
        if (dims[l] > widest) widest = dims[l];
    }
    Model *m = model_new(ops, dims[0], dims[n_layers], widest, args);
    if (!m) return NULL;
    m->kind = KIND_DENSE;
    m->link = link;
    m->scale = 1.0;
    m->n_layers = (int)n_layers;
    for (Py_ssize_t l = 0; l <= n_layers; l++) m->sizes[l] = dims[l];
    for (Py_ssize_t l = 0; l < n_layers; l++) {
        if (!(m->w[l] = array_of(PyTuple_GET_ITEM(ws, l), dims[l] * dims[l + 1], 8, "weights")) ||
            !(m->b[l] = array_of(PyTuple_GET_ITEM(bs, l), dims[l + 1], 8, "biases"))) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return (PyObject *)m;
}

/* mixture(ops, k, d, a (d x kd), c (kd), bias (k)) */
static PyObject *make_mixture(PyObject *self, PyObject *args) {
    PyObject *ops, *a, *c, *bias;
    Py_ssize_t k, d;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nnOOO", &PyTuple_Type, &ops, &k, &d, &a, &c, &bias))
        return NULL;
    if (k < 1 || d < 1) {
        PyErr_SetString(PyExc_ValueError, "k and d must be positive");
        return NULL;
    }
    Model *m = model_new(ops, d, k, k * d, args);
    if (!m) return NULL;
    m->kind = KIND_MIXTURE;
    m->k = k;
    m->d = d;
    if (!(m->a = array_of(a, d * k * d, 8, "a")) || !(m->c = array_of(c, k * d, 8, "c")) ||
        !(m->bias = array_of(bias, k, 8, "bias"))) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

/* score_all(models, attrs): [model.score(attrs) for model in models], reading each distinct
   reader (the same ops tuple) once: models over the same columns share one vector. */
static PyObject *score_all(PyObject *self, PyObject *args) {
    PyObject *models, *attrs;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &models, &attrs)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(models);
    for (Py_ssize_t i = 0; i < n; i++)
        if (Py_TYPE(PyTuple_GET_ITEM(models, i)) != &ModelType) {
            PyErr_SetString(PyExc_TypeError, "score_all takes a tuple of compiled models");
            return NULL;
        }
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Model *m = (Model *)PyTuple_GET_ITEM(models, i);
        Model *same = NULL;
        for (Py_ssize_t j = 0; j < i && !same; j++) {
            Model *before = (Model *)PyTuple_GET_ITEM(models, j);
            if (before->reader.keep == m->reader.keep) same = before;
        }
        int finite;
        if (same) {
            memcpy(m->x, same->x, sizeof(double) * (size_t)m->n_in);
        } else if (reader_fill(&m->reader, attrs, m->x) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        finite = all_finite(m->x, m->n_in);
        PyObject *r;
        if (finite) {
            r = model_evaluate(m, m->x);
            if (!r) {
                Py_DECREF(out);
                return NULL;
            }
        } else {
            r = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(out, i, r);
    }
    return out;
}

/* ---------------------------------------------------------------------------- Live bundle */

/* Every model LiveModels serves, fed by one reader over the union of their columns: each
   attribute is read once per user, each model gathers its inputs from that vector, and the
   attributes rules read (segment, segment_p, scores) and the decision log's record (compact
   JSON) are written straight into a dict. */

enum { ROLE_SEGMENT = 0, ROLE_LIVE = 1, ROLE_SHADOW = 2 };

typedef struct {
    Model *model;
    const int32_t *idx;     /* the model's input j is the union's idx[j] */
    int role;
    const char *head;       /* '"p_click":{"v":3,' — the record's entry up to its values */
    Py_ssize_t head_len;
    PyObject *name, *name_p, *name_by; /* attribute names (segment: segment, segment_p) */
    PyObject *labels;       /* segment: label per component; multiclass: class names */
    PyObject *json_items;   /* the same as JSON text (bytes): ids, or class names */
    double min_p;
    Py_ssize_t min_events;
    Py_ssize_t res_at;      /* where its outcome and values sit in an evaluation's doubles */
} Part;

typedef struct {
    PyObject_HEAD
    Reader reader;
    double *u;
    double *res;     /* the doubles of the evaluation compute() and score() write out */
    Py_ssize_t n_res; /* how many doubles an evaluation takes (a user's slot keeps them) */
    Py_ssize_t n_parts, n_live;
    Part *parts;
    char *buf;
    size_t cap;
    int ascii; /* every head and JSON item is ASCII: the record is too */
    long long scored, unscored;
    PyObject *keep;
    PyObject *empty, *models_key;
} Bundle;

static void bundle_dealloc(Bundle *b) {
    reader_free(&b->reader);
    PyMem_Free(b->u);
    PyMem_Free(b->res);
    PyMem_Free(b->parts);
    PyMem_Free(b->buf);
    Py_XDECREF(b->keep);
    Py_XDECREF(b->empty);
    Py_XDECREF(b->models_key);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* Python's repr(round(x, digits)) for the usual range, fast: the decimal integer nearest to
   x·10^digits, unless x·10^digits lies too near a half for the product's rounding error to
   be ruled out; then (and out of range) printf's correctly rounded "%.*f". Trailing zeros
   dropped as repr drops them; non-finite values as JSON null. */
static size_t format_rounded(char *out, double x, int digits) {
    if (!isfinite(x)) {
        memcpy(out, "null", 4);
        return 4;
    }
    if (x == 0.0) {
        if (signbit(x)) {
            memcpy(out, "-0.0", 4);
            return 4;
        }
        memcpy(out, "0.0", 3);
        return 3;
    }
    double ax = fabs(x), scale = digits == 4 ? 1e4 : 1e6;
    double y = ax * scale, fl = floor(y), frac = y - fl;
    if (ax < 1e9 && fabs(frac - 0.5) > y * 4e-16 + 1e-300) {
        /* the digits of r = round(|x|·10^digits), a point before the last `digits` of them */
        unsigned long long r = (unsigned long long)fl + (frac > 0.5);
        char digits_rev[32];
        int n = 0, len = 0;
        while (n < digits || r) {
            digits_rev[n++] = (char)('0' + r % 10);
            r /= 10;
        }
        if (n == digits) digits_rev[n++] = '0'; /* 0.xxxx */
        int keep = 0; /* fractional digits kept: trailing zeros dropped, at least one */
        while (keep < digits - 1 && digits_rev[keep] == '0') keep++;
        if (x < 0) out[len++] = '-';
        for (int j = n - 1; j >= digits; j--) out[len++] = digits_rev[j];
        out[len++] = '.';
        for (int j = digits - 1; j >= keep; j--) out[len++] = digits_rev[j];
        return (size_t)len;
    }
    char tmp[400];
    int n = snprintf(tmp, sizeof tmp, "%.*f", digits, x);
    if (n < 0 || n >= (int)sizeof tmp) {
        memcpy(out, "null", 4);
        return 4;
    }
    while (n > 2 && tmp[n - 1] == '0' && tmp[n - 2] != '.') n--;
    memcpy(out, tmp, (size_t)n);
    return (size_t)n;
}

static size_t format_count(char *out, Py_ssize_t v) {
    char rev[24];
    int n = 0;
    size_t len = 0;
    unsigned long long u = v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = rev[--n];
    return len;
}

static int is_ascii(PyObject *bytes) {
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(bytes);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(bytes); i++)
        if (c[i] > 127) return 0;
    return 1;
}

static int set_float(PyObject *out, PyObject *key, double v) {
    PyObject *f = PyFloat_FromDouble(v);
    if (!f) return -1;
    int r = PyDict_SetItem(out, key, f);
    Py_DECREF(f);
    return r;
}

#define PUT(text, len)                                                                      \
    do {                                                                                    \
        memcpy(b->buf + at, (text), (size_t)(len));                                         \
        at += (size_t)(len);                                                                \
    } while (0)

/* What one evaluation left for each part, in its doubles at parts[i].res_at: the outcome,
   then the segment's (component, posterior) or the model's outputs after the link. The
   attributes and the record are written from these alone (bundle_emit), so a user's scores
   can be kept as a few doubles and written again without evaluating anything. */
enum { OUTCOME_SCORED = 0, OUTCOME_TOO_FEW_EVENTS = 1, OUTCOME_NOT_FINITE = 2 };

/* Read the union of the columns from attrs once and evaluate every part into res; returns how
   many live models an input that is not finite left unscored, or -1 with an exception.
   events: how many reading events of the user trimtab has seen (-1: unknown). */
static long bundle_eval(Bundle *b, PyObject *attrs, Py_ssize_t events, double *res) {
    if (reader_fill(&b->reader, attrs, b->u) < 0) return -1;
    long unscored = 0;
    for (Py_ssize_t i = 0; i < b->n_parts; i++) {
        Part *p = &b->parts[i];
        Model *m = p->model;
        double *x = m->x, *r = res + p->res_at;
        int finite = 1;
        for (Py_ssize_t j = 0; j < m->n_in; j++) {
            double v = b->u[p->idx[j]];
            x[j] = v;
            finite &= isfinite(v) != 0;
        }
        if (p->role == ROLE_SEGMENT && events >= 0 && events < p->min_events) {
            r[0] = OUTCOME_TOO_FEW_EVENTS;
            continue;
        }
        if (!finite) {
            r[0] = OUTCOME_NOT_FINITE;
            unscored += p->role == ROLE_LIVE;
            continue;
        }
        r[0] = OUTCOME_SCORED;
        if (p->role == ROLE_SEGMENT) {
            Py_ssize_t q;
            mixture_best(m, x, &q, &r[2]);
            r[1] = (double)q;
            continue;
        }
        if (m->kind == KIND_FOREST) {
            if (forest_raw(m, x, r + 1) < 0) {
                PyErr_SetString(PyExc_ValueError, "inconsistent tree masks: no exit leaf");
                return -1;
            }
        } else {
            dense_raw(m, x, m->raw);
            memcpy(r + 1, m->raw, sizeof(double) * (size_t)m->n_out);
        }
        apply_link(r + 1, m->n_out, m->link, m->scale);
    }
    b->scored += b->n_live - unscored;
    b->unscored += unscored;
    return unscored;
}

/* Write what res holds (bundle_eval's outcomes) into the dict out: the attributes rules read
   and the decision log's record under models_key. events: as given to bundle_eval. */
static int bundle_emit(Bundle *b, const double *res, Py_ssize_t events, PyObject *out) {
    size_t at = 0;
    b->buf[at++] = '{';
    for (Py_ssize_t i = 0; i < b->n_parts; i++) {
        Part *p = &b->parts[i];
        Model *m = p->model;
        const double *r = res + p->res_at;
        int outcome = (int)r[0];
        size_t mark = at;
        if (at > 1) b->buf[at++] = ',';
        PUT(p->head, p->head_len);
        if (p->role == ROLE_SEGMENT) {
            if (outcome == OUTCOME_TOO_FEW_EVENTS) {
                if (PyDict_SetItem(out, p->name, b->empty) < 0) return -1;
                PUT("\"skipped\":\"", 11);
                at += format_count(b->buf + at, events);
                PUT(" reading events so far\"}", 24);
                continue;
            }
            if (outcome == OUTCOME_NOT_FINITE) {
                at = mark; /* no segment, nothing recorded */
                continue;
            }
            Py_ssize_t q = (Py_ssize_t)r[1];
            double prob = r[2];
            PyObject *label = prob >= p->min_p ? PyTuple_GET_ITEM(p->labels, q) : b->empty;
            if (PyDict_SetItem(out, p->name, label) < 0 || set_float(out, p->name_p, prob) < 0)
                return -1;
            PyObject *id = PyTuple_GET_ITEM(p->json_items, q);
            PUT("\"id\":", 5);
            PUT(PyBytes_AS_STRING(id), PyBytes_GET_SIZE(id));
            PUT(",\"p\":", 5);
            at += format_rounded(b->buf + at, prob, 4);
            b->buf[at++] = '}';
            continue;
        }
        if (outcome == OUTCOME_NOT_FINITE) {
            if (p->role == ROLE_LIVE) {
                PUT("\"skipped\":\"non-finite input\"}", 29);
            } else {
                PUT("\"skipped\":\"non-finite\"}", 23);
            }
            continue;
        }
        const double *raw = r + 1;
        if (m->n_out == 1) {
            if (p->role == ROLE_LIVE && set_float(out, p->name, raw[0]) < 0) return -1;
            PUT("\"score\":", 8);
            at += format_rounded(b->buf + at, raw[0], 6);
            b->buf[at++] = '}';
            continue;
        }
        Py_ssize_t best = 0;
        for (Py_ssize_t j = 1; j < m->n_out; j++)
            if (raw[j] > raw[best]) best = j;
        if (p->role == ROLE_LIVE) {
            PyObject *by = PyDict_New();
            if (!by) return -1;
            for (Py_ssize_t j = 0; j < m->n_out; j++) {
                PyObject *f = PyFloat_FromDouble(raw[j]);
                if (!f || PyDict_SetItem(by, PyTuple_GET_ITEM(p->labels, j), f) < 0) {
                    Py_XDECREF(f);
                    Py_DECREF(by);
                    return -1;
                }
                Py_DECREF(f);
            }
            int bad = PyDict_SetItem(out, p->name, PyTuple_GET_ITEM(p->labels, best)) < 0 ||
                      set_float(out, p->name_p, raw[best]) < 0 ||
                      PyDict_SetItem(out, p->name_by, by) < 0;
            Py_DECREF(by);
            if (bad) return -1;
        }
        PyObject *cls = PyTuple_GET_ITEM(p->json_items, best);
        PUT("\"class\":", 8);
        PUT(PyBytes_AS_STRING(cls), PyBytes_GET_SIZE(cls));
        PUT(",\"p\":", 5);
        at += format_rounded(b->buf + at, raw[best], 6);
        b->buf[at++] = '}';
    }
    if (at > 1) {
        b->buf[at++] = '}';
        PyObject *record;
        if (b->ascii) { /* numbers and ASCII heads: copy into a compact string */
            record = PyUnicode_New((Py_ssize_t)at, 127);
            if (record) memcpy(PyUnicode_DATA(record), b->buf, at);
        } else {
            record = PyUnicode_DecodeUTF8(b->buf, (Py_ssize_t)at, "strict");
        }
        if (!record) return -1;
        int r = PyDict_SetItem(out, b->models_key, record);
        Py_DECREF(record);
        if (r < 0) return -1;
    }
    return 0;
}

/* score(attrs, events, out) -> how many live models were not scored (an input not finite). */
static long bundle_fill(Bundle *b, PyObject *attrs, Py_ssize_t events, PyObject *out) {
    long unscored = bundle_eval(b, attrs, events, b->res);
    if (unscored < 0 || bundle_emit(b, b->res, events, out) < 0) return -1;
    return unscored;
}

static int events_arg(PyObject *v, Py_ssize_t *events) {
    if (v == Py_None) {
        *events = -1;
        return 0;
    }
    *events = PyLong_AsSsize_t(v);
    return (*events == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* score(attrs, events, out) -> how many live models were not scored (an input not finite);
   events: how many events of the user trimtab has seen, or None. */
static PyObject *bundle_score(Bundle *b, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t events;
    if (nargs != 3 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "score(attrs, events, out: dict)");
        return NULL;
    }
    if (events_arg(args[1], &events) < 0) return NULL;
    long unscored = bundle_fill(b, args[0], events, args[2]);
    return unscored < 0 ? NULL : PyLong_FromLong(unscored);
}

/* compute(attrs, events=None) -> a new dict of the attributes and the record */
static PyObject *bundle_compute(Bundle *b, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t events = -1;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "compute(attrs, events=None)");
        return NULL;
    }
    if (nargs == 2 && events_arg(args[1], &events) < 0) return NULL;
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    if (bundle_fill(b, args[0], events, out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ a user's kept scores */

/* The doubles of a user's last evaluation (bundle_eval's outcomes) and what they were
   computed from: the bundle, the state of the user's applied event ids, the local hour, the
   session and the page view. Allocated once per user and overwritten in place when the
   user's features change, so a feature update allocates and frees no cache entry. */
/* A text a slot was computed for (session id, page view id), kept inline when it is ASCII
   and short — as ids are — so checking it reads the slot's own memory, not a string object
   allocated for an earlier request; otherwise held as the object. */
#define STAMP_TEXT 46
typedef struct {
    PyObject *held;          /* the text itself when not inline; NULL when inline */
    unsigned char len;       /* inline: its length (at most STAMP_TEXT) */
    char data[STAMP_TEXT];
} StampText;

typedef struct {
    PyObject_VAR_HEAD
    PyObject *bundle; /* NULL: nothing kept (a new slot, or an evaluation that failed) */
    uint64_t seen;    /* the version tag of the user's dict of applied event ids; 0: none */
    PyObject *hour;
    Py_ssize_t events;
    StampText session, page;
    double res[];
} Slot;

static int inline_text(PyObject *s) {
    return PyUnicode_CheckExact(s) && PyUnicode_IS_COMPACT_ASCII(s) &&
           PyUnicode_GET_LENGTH(s) <= STAMP_TEXT;
}

static int same(PyObject *kept, PyObject *now);

/* 1 when the kept text equals now (as str == compares them), 0 when not or unsure. */
static int text_same(const StampText *t, PyObject *now) {
    if (t->held != NULL) return same(t->held, now);
    if (!inline_text(now)) return 0; /* a longer, non-ASCII or subclassed text: not this one */
    Py_ssize_t n = PyUnicode_GET_LENGTH(now);
    return n == t->len && memcmp(t->data, PyUnicode_DATA(now), (size_t)n) == 0;
}

static int text_keep(StampText *t, PyObject *now) {
    int equal = text_same(t, now);
    if (equal < 0) return -1;
    if (equal) return 0;
    if (inline_text(now)) {
        Py_CLEAR(t->held);
        t->len = (unsigned char)PyUnicode_GET_LENGTH(now);
        memcpy(t->data, PyUnicode_DATA(now), t->len);
    } else {
        Py_INCREF(now);
        Py_XSETREF(t->held, now);
    }
    return 0;
}

/* Which events a user's state has applied, as one number: the PEP 509 version tag of their
   dict of applied event ids (UserState.seen), which every applied event changes and which is
   unique across every dict of the process for each change (CPython 3.11-3.13 keep it). */
#if PY_VERSION_HEX >= 0x030E0000
#error "the slot's stamp reads PEP 509 dict version tags (CPython 3.11-3.13)"
#endif
static uint64_t seen_version(PyObject *seen) {
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"")
    return seen != NULL && PyDict_Check(seen) ? ((PyDictObject *)seen)->ma_version_tag : 0;
    _Pragma("GCC diagnostic pop")
}

static void slot_dealloc(Slot *s) {
    Py_XDECREF(s->bundle);
    Py_XDECREF(s->hour);
    Py_XDECREF(s->session.held);
    Py_XDECREF(s->page.held);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastscore.Slot",
    .tp_basicsize = offsetof(Slot, res),
    .tp_itemsize = sizeof(double),
    .tp_dealloc = (destructor)slot_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static PyObject *str_session_id, *str_local_hour; /* interned attribute names */

/* 1 when what a slot kept equals what is read now (the same object first: no compare). */
static int same(PyObject *kept, PyObject *now) {
    if (kept == now) return 1;
    if (kept == NULL) return 0;
    return PyObject_RichCompareBool(kept, now, Py_EQ);
}

/* Keep now in *field unless it equals what is there (the kept object stays: nothing freed). */
static int keep_stamp(PyObject **field, PyObject *now) {
    int equal = same(*field, now);
    if (equal < 0) return -1;
    if (!equal) {
        Py_INCREF(now);
        Py_XSETREF(*field, now);
    }
    return 0;
}

/* Drop the oldest slots (the first inserted) until half of max_slots are left. */
static int evict_half(PyObject *slots, Py_ssize_t max_slots) {
    Py_ssize_t pos = 0, drop = PyDict_GET_SIZE(slots) - max_slots / 2;
    PyObject *key, *value, *old = PyList_New(0);
    if (!old) return -1;
    while (PyList_GET_SIZE(old) < drop && PyDict_Next(slots, &pos, &key, &value))
        if (PyList_Append(old, key) < 0) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(old); i++)
        if (PyDict_DelItem(slots, PyList_GET_ITEM(old, i)) < 0) goto fail;
    Py_DECREF(old);
    return 0;
fail:
    Py_DECREF(old);
    return -1;
}

/* read(slots, key, seen, events, page_view_id, attrs, max_slots) -> True when evaluated
   (the user's features changed since their slot was written), False when written from it.

   LiveModels.read: slots is a dict of user key -> Slot; the user's slot serves when it was
   written by this bundle with the same applied events (seen: the user's dict of applied
   event ids, or None), local hour (attrs["local_hour"]), session (attrs["session_id"]) and
   page view; otherwise the models are evaluated into it in place. Either way the attributes
   and the record are written into attrs. A new slot beyond max_slots first drops the oldest
   until half are left. */
static PyObject *bundle_read(Bundle *b, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyDict_CheckExact(args[0]) || !PyDict_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "read(slots: dict, key, seen, events, page_view_id, attrs: dict, max)");
        return NULL;
    }
    PyObject *slots = args[0], *key = args[1], *page = args[4];
    uint64_t seen = seen_version(args[2]);
    PyObject *attrs = args[5];
    Py_ssize_t events, max_slots = PyLong_AsSsize_t(args[6]);
    if ((max_slots == -1 && PyErr_Occurred()) || events_arg(args[3], &events) < 0) return NULL;
    PyObject *session = PyDict_GetItemWithError(attrs, str_session_id);
    if (!session) {
        if (PyErr_Occurred()) return NULL;
        session = b->empty;
    }
    PyObject *hour = PyDict_GetItemWithError(attrs, str_local_hour);
    if (!hour) {
        if (PyErr_Occurred()) return NULL;
        hour = Py_None;
    }
    Py_INCREF(session); /* attrs is the caller's: hold what is compared while Python may run */
    Py_INCREF(hour);
    PyObject *result = NULL;
    Slot *slot = (Slot *)PyDict_GetItemWithError(slots, key);
    if (!slot && PyErr_Occurred()) goto done;
    if (slot && (Py_TYPE(slot) != &SlotType || Py_SIZE(slot) != b->n_res)) slot = NULL;
    Py_XINCREF(slot);
    if (slot && slot->bundle == (PyObject *)b) {
        int fresh = slot->seen == seen;
        if (fresh > 0) fresh = same(slot->hour, hour);
        if (fresh > 0) fresh = text_same(&slot->session, session);
        if (fresh > 0) fresh = text_same(&slot->page, page);
        if (fresh < 0) goto done;
        if (fresh) {
            if (bundle_emit(b, slot->res, slot->events, attrs) == 0) result = Py_NewRef(Py_False);
            goto done;
        }
    }
    if (!slot) {
        if (PyDict_GET_SIZE(slots) >= max_slots && evict_half(slots, max_slots) < 0) goto done;
        slot = PyObject_NewVar(Slot, &SlotType, b->n_res);
        if (!slot) goto done;
        slot->bundle = slot->hour = slot->session.held = slot->page.held = NULL;
        slot->session.len = slot->page.len = 0;
        slot->events = 0;
        slot->seen = 0;
        if (PyDict_SetItem(slots, key, (PyObject *)slot) < 0) goto done;
    }
    Py_CLEAR(slot->bundle); /* nothing kept until the evaluation succeeds */
    if (bundle_eval(b, attrs, events, slot->res) < 0) goto done;
    if (keep_stamp(&slot->hour, hour) < 0 || text_keep(&slot->session, session) < 0 ||
        text_keep(&slot->page, page) < 0)
        goto done;
    slot->seen = seen;
    slot->events = events;
    slot->bundle = Py_NewRef((PyObject *)b);
    if (bundle_emit(b, slot->res, events, attrs) == 0) result = Py_NewRef(Py_True);
done:
    Py_XDECREF(slot);
    Py_DECREF(session);
    Py_DECREF(hour);
    return result;
}

/* counts() -> (scored, unscored): live models scored, and left unscored, since built */
static PyObject *bundle_counts(Bundle *b, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("(LL)", b->scored, b->unscored);
}

/* vector(attrs): the union vector (tests compare it with each model's columns) */
static PyObject *bundle_vector(Bundle *b, PyObject *attrs) {
    if (reader_fill(&b->reader, attrs, b->u) < 0) return NULL;
    return vector_list(b->u, b->reader.width);
}

static PyMethodDef bundle_methods[] = {
    {"compute", (PyCFunction)(void (*)(void))bundle_compute, METH_FASTCALL,
     "compute(attrs, events=None): a new dict of the attributes and the record"},
    {"counts", (PyCFunction)bundle_counts, METH_NOARGS, "(scored, unscored) live models"},
    {"read", (PyCFunction)(void (*)(void))bundle_read, METH_FASTCALL,
     "read(slots, key, seen, events, page_view_id, attrs, max): a user's kept or new scores"},
    {"score", (PyCFunction)(void (*)(void))bundle_score, METH_FASTCALL,
     "score(attrs, events, out): write the attributes and the record into out"},
    {"vector", (PyCFunction)bundle_vector, METH_O, "the union of the models' inputs"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BundleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastscore.Bundle",
    .tp_basicsize = sizeof(Bundle),
    .tp_dealloc = (destructor)bundle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = bundle_methods,
};

/* bundle(ops, width, models_key, parts): parts are tuples (model, idx bytes (int32 × n_in),
   role, head bytes, name, name_p, name_by, labels, json_items, min_p, min_events); name_p,
   name_by, labels and json_items may be None where the role and outputs need none. */
static PyObject *make_bundle(PyObject *self, PyObject *args) {
    PyObject *ops, *parts, *models_key;
    Py_ssize_t width;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nUO!", &PyTuple_Type, &ops, &width, &models_key,
                          &PyTuple_Type, &parts))
        return NULL;
    if (width < 1) {
        PyErr_SetString(PyExc_ValueError, "width must be positive");
        return NULL;
    }
    Bundle *b = PyObject_New(Bundle, &BundleType);
    if (!b) return NULL;
    memset((char *)b + sizeof(PyObject), 0, sizeof(Bundle) - sizeof(PyObject));
    Py_INCREF(args);
    b->keep = args;
    b->empty = PyUnicode_FromString("");
    Py_INCREF(models_key);
    b->models_key = models_key;
    b->n_parts = PyTuple_GET_SIZE(parts);
    b->u = PyMem_Calloc((size_t)width, sizeof(double));
    b->parts = PyMem_Calloc((size_t)(b->n_parts ? b->n_parts : 1), sizeof(Part));
    if (!b->empty || !b->u || !b->parts) {
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    if (reader_init(&b->reader, ops, width) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    size_t cap = 4;
    b->ascii = 1;
    for (Py_ssize_t i = 0; i < b->n_parts; i++) {
        PyObject *t = PyTuple_GET_ITEM(parts, i), *model, *idx, *head;
        Part *p = &b->parts[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 11) goto bad;
        model = PyTuple_GET_ITEM(t, 0);
        idx = PyTuple_GET_ITEM(t, 1);
        head = PyTuple_GET_ITEM(t, 3);
        if (Py_TYPE(model) != &ModelType || !PyBytes_Check(head)) goto bad;
        p->model = (Model *)model;
        p->role = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 2));
        p->name = PyTuple_GET_ITEM(t, 4);
        p->name_p = PyTuple_GET_ITEM(t, 5);
        p->name_by = PyTuple_GET_ITEM(t, 6);
        p->labels = PyTuple_GET_ITEM(t, 7);
        p->json_items = PyTuple_GET_ITEM(t, 8);
        p->min_p = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 9));
        p->min_events = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 10));
        if (PyErr_Occurred()) goto fail;
        p->head = PyBytes_AS_STRING(head);
        p->head_len = PyBytes_GET_SIZE(head);
        if (!(p->idx = array_of(idx, p->model->n_in, 4, "idx"))) goto fail;
        for (Py_ssize_t j = 0; j < p->model->n_in; j++)
            if (p->idx[j] < 0 || p->idx[j] >= width) goto bad;
        Model *m = p->model;
        int multi = m->kind != KIND_MIXTURE && m->n_out > 1;
        Py_ssize_t n_items = m->kind == KIND_MIXTURE ? m->k : m->n_out;
        if (p->role < ROLE_SEGMENT || p->role > ROLE_SHADOW ||
            (p->role == ROLE_SEGMENT) != (m->kind == KIND_MIXTURE) ||
            (p->role != ROLE_SHADOW && !PyUnicode_Check(p->name)))
            goto bad;
        if (p->role == ROLE_SEGMENT || multi) {
            if (!PyTuple_Check(p->labels) || PyTuple_GET_SIZE(p->labels) != n_items ||
                !PyTuple_Check(p->json_items) || PyTuple_GET_SIZE(p->json_items) != n_items)
                goto bad;
            for (Py_ssize_t j = 0; j < n_items; j++) {
                PyObject *item = PyTuple_GET_ITEM(p->json_items, j);
                if (!PyUnicode_Check(PyTuple_GET_ITEM(p->labels, j)) || !PyBytes_Check(item))
                    goto bad;
                cap += (size_t)PyBytes_GET_SIZE(item);
                b->ascii &= is_ascii(item);
            }
            if (p->role != ROLE_SHADOW && !PyUnicode_Check(p->name_p)) goto bad;
            if (p->role == ROLE_LIVE && !PyUnicode_Check(p->name_by)) goto bad;
        }
        b->ascii &= is_ascii(head);
        b->n_live += p->role == ROLE_LIVE;
        p->res_at = b->n_res;
        b->n_res += 1 + (m->kind == KIND_MIXTURE ? 2 : m->n_out);
        cap += (size_t)p->head_len + 420; /* separators, a number ("%.6f" of 1e308), a message */
    }
    b->buf = PyMem_Malloc(cap);
    b->cap = cap;
    b->res = PyMem_Calloc((size_t)(b->n_res ? b->n_res : 1), sizeof(double));
    if (!b->buf || !b->res) {
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    return (PyObject *)b;
bad:
    PyErr_SetString(PyExc_ValueError, "a malformed bundle part");
fail:
    Py_DECREF(b);
    return NULL;
}

/* summed_map(type): the dict subclass whose `total` member the reader takes for sum(map) */
static PyObject *register_summed(PyObject *self, PyObject *type) {
    (void)self;
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError, "summed_map() takes a subclass of dict");
        return NULL;
    }
    PyObject *descr = PyObject_GetAttrString(type, "total");
    if (!descr) return NULL;
    int ok = Py_TYPE(descr) == &PyMemberDescr_Type &&
             ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    Py_ssize_t offset = ok ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
    Py_DECREF(descr);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "the type's `total` must be a __slots__ member");
        return NULL;
    }
    Py_INCREF(type);
    Py_XSETREF(summed_type, (PyTypeObject *)type);
    summed_offset = offset;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"summed_map", register_summed, METH_O, "register the map type that keeps its sum"},
    {"score_all", score_all, METH_VARARGS, "several models' outputs for one user's attributes"},
    {"forest", make_forest, METH_VARARGS, "compiled trees"},
    {"dense", make_dense, METH_VARARGS, "a ReLU network or a linear model"},
    {"mixture", make_mixture, METH_VARARGS, "Gaussian components (segments)"},
    {"bundle", make_bundle, METH_VARARGS, "every served model over one reader (LiveModels)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastscore", "trimtab's live scoring in C", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastscore(void) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&BundleType) < 0 ||
        PyType_Ready(&SlotType) < 0)
        return NULL;
    str_session_id = PyUnicode_InternFromString("session_id");
    str_local_hour = PyUnicode_InternFromString("local_hour");
    if (!str_session_id || !str_local_hour) return NULL;
    PyObject *mod = PyModule_Create(&module_def);
    if (!mod) return NULL;
    if (PyModule_AddIntConstant(mod, "ABI", 1) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
