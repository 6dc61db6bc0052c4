/*
 * Native walk of one chunk of the audit ledger in an SQLite database (hvelv.audit.chunks).
 *
 * It does what chunks._chain and the SQLite column check do for a chunk, without making a
 * Python object per event: it reads the rows with the SQLite C API, recomputes every chain
 * hash (SHA-256(prev_hash || body)) and link, builds the chunk's RFC 6962 Merkle levels
 * (leaf H(0x00 || hash), node H(0x01 || left || right)), and checks that the filter columns
 * agree with the body's top-level values.
 *
 * It only answers "clean" for what it can prove. A chain that is not exactly right gives
 * None (the Python side re-walks the chunk and words the problem), and a body it cannot
 * read with certainty (an escape in a compared value, a duplicate key, a non-canonical
 * number) makes it report the columns as unchecked, so the exact SQL check runs.
 *
 * walk(path, lo, hi, open_below, open_above, marks) ->
 *     None | (first_prev, last_hash, frontier, [(chain_hash, frontier) per mark], columns_ok)
 * where a frontier is [(size, node), ...] of the chunk's own leaves, largest first, and the
 * marks are sequence numbers in [lo, hi] (checkpoint tree sizes).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#define HASH 32

typedef struct {
    const unsigned char *p;
    size_t n;
    int kind; /* 0 missing, 1 string without escapes, 2 integer, 3 null, -1 unsure */
    long long integer;
} Value;

/* the seven compared keys, in the order of the SELECT's columns 4..10 */
static const char *KEYS[7] = {"seq", "ts", "actor", "action", "outcome", "project", "target"};
static const size_t KEY_LENGTHS[7] = {3, 2, 5, 6, 7, 7, 6};

static size_t skip_ws(const unsigned char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* the end of a JSON string starting at s[i] == '"' (index after the closing quote), or 0
 * when it is not well formed (a raw control character, an unknown or short escape);
 * *escaped tells whether it holds an escape */
static size_t string_end(const unsigned char *s, size_t i, size_t n, int *escaped) {
    *escaped = 0;
    for (i++; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"') return i + 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            *escaped = 1;
            if (++i >= n) return 0;
            c = s[i];
            if (c == 'u') {
                if (n - i < 5) return 0;
                for (int h = 1; h <= 4; h++)
                    if (!isxdigit(s[i + h])) return 0;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
        }
    }
    return 0;
}

/* the end of a JSON number at s[i] (RFC 8259 grammar), or 0 */
static size_t number_end(const unsigned char *s, size_t i, size_t n) {
    if (i < n && s[i] == '-') i++;
    if (i >= n || !isdigit(s[i])) return 0;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && isdigit(s[i])) i++;
    }
    if (i < n && s[i] == '.') {
        if (++i >= n || !isdigit(s[i])) return 0;
        while (i < n && isdigit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !isdigit(s[i])) return 0;
        while (i < n && isdigit(s[i])) i++;
    }
    return i;
}

/* the end of any JSON value starting at s[i], or 0 when it is not well formed */
static size_t value_end(const unsigned char *s, size_t i, size_t n, int depth) {
    int escaped;
    if (i >= n || depth > 64) return 0;
    if (s[i] == '"') return string_end(s, i, n, &escaped);
    if (s[i] == '{' || s[i] == '[') {
        unsigned char close = s[i] == '{' ? '}' : ']';
        i = skip_ws(s, i + 1, n);
        if (i < n && s[i] == close) return i + 1;
        for (;;) {
            if (close == '}') {
                if (i >= n || s[i] != '"') return 0;
                i = string_end(s, i, n, &escaped);
                if (!i) return 0;
                i = skip_ws(s, i, n);
                if (i >= n || s[i] != ':') return 0;
                i = skip_ws(s, i + 1, n);
            }
            i = value_end(s, i, n, depth + 1);
            if (!i) return 0;
            i = skip_ws(s, i, n);
            if (i < n && s[i] == ',') {
                i = skip_ws(s, i + 1, n);
                continue;
            }
            if (i < n && s[i] == close) return i + 1;
            return 0;
        }
    }
    if (n - i >= 4 && (memcmp(s + i, "true", 4) == 0 || memcmp(s + i, "null", 4) == 0)) return i + 4;
    if (n - i >= 5 && memcmp(s + i, "false", 5) == 0) return i + 5;
    return number_end(s, i, n);
}

/* read the top-level values of the compared keys; 0 when the body is not one JSON object */
static int top_values(const unsigned char *s, size_t n, Value out[7]) {
    int escaped;
    for (int k = 0; k < 7; k++) out[k].kind = 0;
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '{') return 0;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == '}') return skip_ws(s, i + 1, n) == n;
    for (;;) {
        if (i >= n || s[i] != '"') return 0;
        size_t key_end = string_end(s, i, n, &escaped);
        if (!key_end) return 0;
        const unsigned char *key = s + i + 1;
        size_t key_n = key_end - i - 2;
        int which = -1;
        if (!escaped)
            for (int k = 0; k < 7; k++)
                if (KEY_LENGTHS[k] == key_n && memcmp(KEYS[k], key, key_n) == 0) which = k;
        i = skip_ws(s, key_end, n);
        if (i >= n || s[i] != ':') return 0;
        i = skip_ws(s, i + 1, n);
        size_t end = value_end(s, i, n, 1);
        if (!end) return 0;
        if (escaped) {
            /* an escaped key might spell a compared one: leave it to the exact check */
            for (int k = 0; k < 7; k++) out[k].kind = -1;
        } else if (which >= 0) {
            Value *v = &out[which];
            if (v->kind != 0) {
                v->kind = -1; /* a duplicate key */
            } else if (s[i] == '"') {
                int esc;
                string_end(s, i, n, &esc);
                v->p = s + i + 1;
                v->n = end - i - 2;
                v->kind = esc ? -1 : 1;
            } else if (end - i == 4 && memcmp(s + i, "null", 4) == 0) {
                v->kind = 3;
            } else {
                /* a canonical integer: -?(0|[1-9][0-9]*), at most 18 digits */
                size_t j = i, digits;
                int negative = 0;
                if (s[j] == '-') {
                    negative = 1;
                    j++;
                }
                digits = end - j;
                v->kind = -1;
                if (digits >= 1 && digits <= 18 && !(digits > 1 && s[j] == '0')) {
                    long long x = 0;
                    size_t d;
                    for (d = j; d < end && s[d] >= '0' && s[d] <= '9'; d++) x = x * 10 + (s[d] - '0');
                    if (d == end) {
                        v->kind = 2;
                        v->integer = negative ? -x : x;
                    }
                }
            }
        }
        i = skip_ws(s, end, n);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, i + 1, n);
            continue;
        }
        if (i < n && s[i] == '}') return skip_ws(s, i + 1, n) == n;
        return 0;
    }
}

/* 1: the row's columns 4..10 certainly equal the body's values; 0: not proven */
static int columns_agree(sqlite3_stmt *st, const unsigned char *body, size_t n) {
    Value v[7];
    if (!top_values(body, n, v)) return 0;
    for (int k = 0; k < 7; k++) {
        /* the column's value read once (measured cheaper than sqlite3_column_* calls). It is
         * an unprotected value; the connection is opened NOMUTEX (multi-thread mode), where
         * SQLite makes no difference between protected and unprotected values */
        sqlite3_value *col = sqlite3_column_value(st, k == 0 ? 0 : 4 + k);
        int type = sqlite3_value_type(col);
        switch (v[k].kind) {
        case 0:
        case 3:
            if (type != SQLITE_NULL) return 0;
            break;
        case 1:
            if (type != SQLITE_TEXT) return 0;
            if ((size_t)sqlite3_value_bytes(col) != v[k].n) return 0;
            if (v[k].n && memcmp(sqlite3_value_text(col), v[k].p, v[k].n) != 0) return 0;
            break;
        case 2:
            if (type != SQLITE_INTEGER || sqlite3_value_int64(col) != v[k].integer) return 0;
            break;
        default:
            return 0;
        }
    }
    return 1;
}

/* columns 0-3 for the chain, 5-10 (and the seq of column 0) for the column check */
#define COLUMNS "seq, prev_hash, body, hash, NULL, ts, actor, action, outcome, project_id, target"
enum { SCAN_CLEAN, SCAN_DIRTY, SCAN_ASTRAY };

static void sha256_2(const unsigned char *a, size_t a_n, const unsigned char *b, size_t b_n,
                     unsigned char *out);

/* the first row's integer of a query of one or two parameters (*found = 0: no row) */
static int one_integer(sqlite3 *db, const char *sql, long long a, long long b, long long *out,
                       int *found) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, a);
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) > 1) rc = sqlite3_bind_int64(st, 2, b);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        *found = rc == SQLITE_ROW;
        if (*found) *out = sqlite3_column_int64(st, 0);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Walk the rows of `sql` (two bound bounds), which must be the events lo..hi in order.
 * SCAN_CLEAN: hashes, links and (into *columns_ok) the columns checked; SCAN_DIRTY: the
 * chain is not right; SCAN_ASTRAY (only by_rowid): the rows are not lo..hi in order, so the
 * caller walks by seq instead. */
static int scan(sqlite3 *db, const char *sql, long long a, long long b, long long lo, long long hi,
                int by_rowid, unsigned char *chain, unsigned char *first_prev, int *columns_ok, int *rc_out) {
    sqlite3_stmt *st = NULL;
    int outcome = SCAN_CLEAN, rc;
    long long expected = lo;
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, a);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, b);
    if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            /* each value read once, blob before bytes (see columns_agree on unprotected values) */
            sqlite3_value *seq = sqlite3_column_value(st, 0), *prev_v = sqlite3_column_value(st, 1),
                          *body_v = sqlite3_column_value(st, 2), *hash_v = sqlite3_column_value(st, 3);
            if (expected > hi || sqlite3_value_type(seq) != SQLITE_INTEGER ||
                sqlite3_value_int64(seq) != expected) {
                outcome = by_rowid ? SCAN_ASTRAY : SCAN_DIRTY;
                break;
            }
            if (sqlite3_value_type(prev_v) != SQLITE_BLOB || sqlite3_value_type(body_v) != SQLITE_BLOB ||
                sqlite3_value_type(hash_v) != SQLITE_BLOB) {
                outcome = SCAN_DIRTY;
                break;
            }
            const unsigned char *prev = sqlite3_value_blob(prev_v);
            const unsigned char *body = sqlite3_value_blob(body_v);
            const unsigned char *stored = sqlite3_value_blob(hash_v);
            size_t body_n = (size_t)sqlite3_value_bytes(body_v);
            if (sqlite3_value_bytes(prev_v) != HASH || sqlite3_value_bytes(hash_v) != HASH) {
                outcome = SCAN_DIRTY;
                break;
            }
            long long at = expected - lo;
            if (at == 0) {
                memcpy(first_prev, prev, HASH);
            } else if (memcmp(prev, chain + (at - 1) * HASH, HASH) != 0) {
                outcome = SCAN_DIRTY;
                break;
            }
            unsigned char digest[HASH];
            sha256_2(prev, HASH, body, body_n, digest);
            if (memcmp(digest, stored, HASH) != 0) {
                outcome = SCAN_DIRTY;
                break;
            }
            memcpy(chain + at * HASH, stored, HASH);
            if (*columns_ok && !columns_agree(st, body, body_n)) *columns_ok = 0;
            expected++;
        }
        if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    *rc_out = rc;
    if (rc == SQLITE_OK && outcome == SCAN_CLEAN && expected != hi + 1)
        outcome = by_rowid ? SCAN_ASTRAY : SCAN_DIRTY;
    return outcome;
}

/* the low-level SHA-256 calls: SHA256() fetches the algorithm (behind a lock) per call */
static void sha256_2(const unsigned char *a, size_t a_n, const unsigned char *b, size_t b_n,
                     unsigned char *out) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, a, a_n);
    if (b_n) SHA256_Update(&ctx, b, b_n);
    SHA256_Final(out, &ctx);
}

static void leaf(const unsigned char *hash, unsigned char *out) {
    unsigned char buf[1 + HASH];
    buf[0] = 0;
    memcpy(buf + 1, hash, HASH);
    sha256_2(buf, sizeof buf, NULL, 0, out);
}

static void node(const unsigned char *left, const unsigned char *right, unsigned char *out) {
    unsigned char buf[1 + 2 * HASH];
    buf[0] = 1;
    memcpy(buf + 1, left, HASH);
    memcpy(buf + 1 + HASH, right, HASH);
    sha256_2(buf, sizeof buf, NULL, 0, out);
}

/* levels[h] holds count >> h nodes; the frontier of the first `count` leaves */
static PyObject *frontier(unsigned char **levels, int heights, long long count) {
    PyObject *list = PyList_New(0);
    long long start = 0;
    if (!list) return NULL;
    for (int h = heights - 1; h >= 0; h--) {
        long long size = 1LL << h;
        if (count - start >= size) {
            PyObject *item = Py_BuildValue("(Ly#)", size, levels[h] + (start >> h) * HASH,
                                           (Py_ssize_t)HASH);
            if (!item || PyList_Append(list, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(item);
            start += size;
        }
    }
    return list;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    const char *path;
    long long lo, hi;
    int open_below, open_above;
    PyObject *marks_arg;
    if (!PyArg_ParseTuple(args, "sLLppO", &path, &lo, &hi, &open_below, &open_above, &marks_arg))
        return NULL;
    if (hi < lo || hi - lo + 1 > (1LL << 30)) {
        PyErr_SetString(PyExc_ValueError, "a chunk holds 1 to 2**30 events");
        return NULL;
    }
    /* the marks, checked and copied: the walk below never looks at the Python object again */
    PyObject *marks = PySequence_Fast(marks_arg, "marks must be a sequence");
    if (!marks) return NULL;
    Py_ssize_t n_marks = PySequence_Fast_GET_SIZE(marks);
    long long *mark_at = PyMem_Malloc((size_t)(n_marks ? n_marks : 1) * sizeof *mark_at);
    if (!mark_at) {
        Py_DECREF(marks);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t m = 0; m < n_marks; m++) {
        long long mark = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(marks, m));
        if (mark == -1 && PyErr_Occurred()) goto fail_marks;
        if (mark < lo || mark > hi) {
            PyErr_SetString(PyExc_ValueError, "a mark lies outside the chunk");
            goto fail_marks;
        }
        mark_at[m] = mark;
    }
    Py_DECREF(marks);
    long long count = hi - lo + 1;

    int heights = 1;
    while ((1LL << heights) <= count) heights++;
    unsigned char **levels = PyMem_Calloc((size_t)heights, sizeof *levels);
    unsigned char *chain = PyMem_Malloc((size_t)count * HASH);
    if (!levels || !chain) {
        PyMem_Free(levels);
        PyMem_Free(chain);
        PyMem_Free(mark_at);
        return PyErr_NoMemory();
    }

    sqlite3 *db = NULL;
    PyObject *result = NULL;
    int outcome = SCAN_DIRTY, columns_ok = 1, rc;
    unsigned char first_prev[HASH];
    char error[200] = "";

    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA mmap_size = 2147418112", NULL, NULL, NULL);
    /* one read transaction: the lookups and the scans see the same rows */
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    /* the chunk is the rows with lo <= seq < hi + 1 (half open, as in chunks._range: a
     * seq that is not an integer still belongs to exactly one chunk) */
    long long first_row = 0, last_row = 0, in_range = 0;
    int found_lo = 0, found_hi = 0, found_count = 0, beyond = 0;
    if (rc == SQLITE_OK) rc = one_integer(db, "SELECT rowid FROM audit_events WHERE seq = ?1", lo, 0, &first_row, &found_lo);
    if (rc == SQLITE_OK) rc = one_integer(db, "SELECT rowid FROM audit_events WHERE seq = ?1", hi, 0, &last_row, &found_hi);
    if (rc == SQLITE_OK)
        rc = one_integer(db, "SELECT count(*) FROM audit_events WHERE seq >= ?1 AND seq < ?2", lo, hi + 1,
                         &in_range, &found_count);
    if (rc == SQLITE_OK && open_below) {
        long long ignored;
        int found = 0;
        rc = one_integer(db, "SELECT 1 FROM audit_events WHERE seq < ?1 OR seq IS NULL LIMIT 1", lo, 0, &ignored, &found);
        beyond |= found;
    }
    if (rc == SQLITE_OK && open_above) {
        long long ignored;
        int found = 0;
        rc = one_integer(db, "SELECT 1 FROM audit_events WHERE seq >= ?1 LIMIT 1", hi + 1, 0, &ignored, &found);
        beyond |= found;
    }
    if (rc == SQLITE_OK && !beyond) {
        outcome = SCAN_ASTRAY;
        /* the rows in rowid order (a plain table scan; by the seq index each row costs a b-tree
         * lookup, measured 4x slower) when exactly hi - lo + 1 rows have a seq in the range and
         * the rowids of lo and hi span as many: they are the chunk when their seqs run lo..hi */
        if (found_lo && found_hi && in_range == count && first_row <= last_row &&
            last_row - first_row == hi - lo)
            outcome = scan(db, "SELECT " COLUMNS " FROM audit_events WHERE rowid >= ?1 AND rowid <= ?2 ORDER BY rowid",
                           first_row, last_row, lo, hi, 1, chain, first_prev, &columns_ok, &rc);
        if (rc == SQLITE_OK && outcome == SCAN_ASTRAY) {
            columns_ok = 1;
            outcome = scan(db, "SELECT " COLUMNS " FROM audit_events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
                           lo, hi + 1, lo, hi, 0, chain, first_prev, &columns_ok, &rc);
        }
    }
    if (rc != SQLITE_OK) snprintf(error, sizeof error, "%s", db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    Py_END_ALLOW_THREADS

    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "reading the audit events: %s", error);
        goto done;
    }
    if (outcome != SCAN_CLEAN) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }

    /* the Merkle levels of the chunk's leaves */
    for (int h = 0; h < heights; h++) {
        long long width = count >> h;
        levels[h] = PyMem_Malloc((size_t)(width ? width : 1) * HASH);
        if (!levels[h]) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (long long i = 0; i < count; i++) leaf(chain + i * HASH, levels[0] + i * HASH);
    for (int h = 1; h < heights; h++)
        for (long long i = 0; i < (count >> h); i++)
            node(levels[h - 1] + 2 * i * HASH, levels[h - 1] + (2 * i + 1) * HASH, levels[h] + i * HASH);
    Py_END_ALLOW_THREADS

    PyObject *marked = PyList_New(n_marks);
    if (!marked) goto done;
    for (Py_ssize_t m = 0; m < n_marks; m++) {
        long long mark = mark_at[m];
        PyObject *front = frontier(levels, heights, mark - lo + 1);
        PyObject *item = front ? Py_BuildValue("(y#N)", chain + (mark - lo) * HASH, (Py_ssize_t)HASH, front)
                               : NULL;
        if (!item) {
            Py_DECREF(marked);
            goto done;
        }
        PyList_SET_ITEM(marked, m, item);
    }
    PyObject *whole = frontier(levels, heights, count);
    if (!whole) {
        Py_DECREF(marked);
        goto done;
    }
    result = Py_BuildValue("(y#y#NNO)", first_prev, (Py_ssize_t)HASH, chain + (count - 1) * HASH,
                           (Py_ssize_t)HASH, whole, marked, columns_ok ? Py_True : Py_False);

done:
    sqlite3_close(db);
    for (int h = 0; h < heights; h++) PyMem_Free(levels[h]);
    PyMem_Free(levels);
    PyMem_Free(chain);
    PyMem_Free(mark_at);
    return result;

fail_marks:
    Py_DECREF(marks);
    PyMem_Free(mark_at);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"walk", walk, METH_VARARGS, "Walk one chunk of the audit ledger in an SQLite file."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_walk", NULL, -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&MODULE); }
