/* The `sqlitebin_bm25` FTS5 auxiliary function: FTS5's own BM25 (the formula, constants and IDF of its bm25(),
   fts5_aux.c) with two things bm25() cannot do, which make keyword search's top k cheap (sqlitebin/keyword.py):

   - IDF from given document counts. bm25() counts each phrase's documents by walking its whole posting list
     (xQueryPhrase) once per query; for a term in 10% of the documents that is most of the query's time. Here a
     phrase's count can be given (from the collection's `N_keyword_terms` table) instead of counted.
   - Bounded work per row. With `k` > 0 the function keeps the k best scores it has returned so far; a row whose
     score cannot beat the k-th of them (bounded from above with its term frequencies and the shortest length it
     can have, before its length is read) gets NULL, and its length is never read from the `_docsize` table.
     Every row of the true top k gets its exact score, so `WHERE score IS NOT NULL ORDER BY score LIMIT k` is the
     exact top k.

       SELECT rowid, sqlitebin_bm25(t, k, counts, counted_in) AS score FROM t WHERE t MATCH '...'

   - `k`: 0 scores every row (as bm25() does), else an integer from 1 to SQLITEBIN_BM25_MAX_K.
   - `counts`: NULL (count every phrase, as bm25()), or one word per phrase of the MATCH expression, in its order,
     separated by spaces: `?` counts the phrase's documents as bm25() does; a number is its document count;
     `-` leaves the phrase out of the score (a phrase the expression repeats only to select rows). A word may end
     in `*w`, a number above 0 that multiplies the phrase's share of the score (`?*2` scores as bm25() does a
     phrase written twice in the query).
   - `counted_in`: NULL or 0 uses the given counts as they are; a positive number is the document count they were
     taken from, and each is scaled by the table's current row count over it (a stale count keeps its share).

   Score, as bm25(): minus the sum over scored phrases of weight * idf * f * (k1 + 1) / (f + k1 * (1 - b + b * D / avgdl)),
   f the phrase's instances in the row (every column, weight 1), D the row's tokens, avgdl the table's mean,
   idf = log((N - n + 0.5) / (n + 0.5)), at least 1e-6. Same operations in the same order, so a row's score equals
   bm25()'s over the same phrases with the same counts to the last bit (weight 1).

   Also `sqlitebin_bm25_idf(n, N)`, a scalar SQL function (in the entry point's registration table) giving the same
   IDF, with which keyword search's SQL chooses its essential terms (no need for SQLite's optional math functions).

   Registered on each connection through the fts5_api pointer, like the tokenizer (tokenizer.h). Included after
   SQLITE_EXTENSION_INIT1, so every sqlite3_* call goes through the API pointer; no global state. */

#ifndef SQLITEBIN_BM25_H
#define SQLITEBIN_BM25_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SQLITEBIN_BM25_K1 1.2
#define SQLITEBIN_BM25_B 0.75
#define SQLITEBIN_BM25_MIN_IDF 1e-6
#define SQLITEBIN_BM25_MAX_K 1000000
/* A row is skipped only when its upper bound is below the k-th best score by more than this share: rounding in
   the bound can never drop a row of the top k (or one tied with its k-th). */
#define SQLITEBIN_BM25_BOUND_MARGIN 1e-9

typedef struct SqlitebinBm25 {
    int phrases;
    int k;                      /* rows kept for the bound; 0: every row scored */
    int kept;                   /* scores in the heap */
    double average_length;
    double *idf;                /* per phrase; 0 for a phrase left out of the score */
    double *weight;             /* per phrase, the factor of its share of the score (1 unless given) */
    double *frequency;          /* per phrase, the current row's instances */
    double *heap;               /* min-heap of the k best scores returned so far (positive BM25) */
    sqlite3_int64 last_rowid;   /* the row last answered: SQLite may evaluate the call twice for one row */
    int has_last;
    int last_null;
    double last_score;
} SqlitebinBm25;

/* FTS5's IDF (fts5_aux.c): log((N - n + 0.5) / (n + 0.5)), and 1e-6 where that is not above 0. */
static double sqlitebin_bm25_idf_of(double documents, double total) {
    double idf = log((total - documents + 0.5) / (documents + 0.5));
    return idf <= 0.0 ? SQLITEBIN_BM25_MIN_IDF : idf;
}

/* sqlitebin_bm25_idf(n, N): the IDF sqlitebin_bm25() and bm25() give a phrase in n of N documents; NULL in, NULL
   out. Keyword search (sqlitebin/keyword.py) weighs query terms with it inside its SQL. */
static void sqlitebin_bm25_idf_sql(sqlite3_context *context, int nargs, sqlite3_value **args) {
    double documents, total;
    int i;
    (void)nargs;
    for (i = 0; i < 2; i++) {
        int type = sqlite3_value_type(args[i]);
        if (type == SQLITE_NULL) {
            sqlite3_result_null(context);
            return;
        }
        if (type != SQLITE_INTEGER && type != SQLITE_FLOAT) {
            char *message = sqlite3_mprintf("sqlitebin_bm25_idf(): %s must be a number, got %s",
                                            i == 0 ? "the document count" : "the total", sqlite3_value_text(args[i]));
            sqlite3_result_error(context, message, -1);
            sqlite3_free(message);
            return;
        }
    }
    documents = sqlite3_value_double(args[0]);
    total = sqlite3_value_double(args[1]);
    if (!(documents >= 0.0 && documents <= total) || isinf(total)) {
        char *message = sqlite3_mprintf("sqlitebin_bm25_idf(): the document count must be from 0 to the total, "
                                        "got %!.15g of %!.15g", documents, total);
        sqlite3_result_error(context, message, -1);
        sqlite3_free(message);
        return;
    }
    sqlite3_result_double(context, sqlitebin_bm25_idf_of(documents, total));
}

static int sqlitebin_bm25_count(const Fts5ExtensionApi *api, Fts5Context *fts, void *user) {
    (void)api;
    (void)fts;
    (*(sqlite3_int64 *)user)++;
    return SQLITE_OK;
}

/* Read the `counts` argument: each phrase's document count into counts[] (-1 for `?`, -2 for `-`) and its weight
   into weights[]. Returns 0, or -1 with a message in *error (sqlite3_mprintf'd). */
static int sqlitebin_bm25_parse_counts(const char *text, int phrases, double *counts, double *weights, char **error) {
    int i = 0;
    const char *p = text;
    while (*p) {
        const char *start, *star;
        while (*p == ' ') p++;
        if (!*p) break;
        start = p;
        while (*p && *p != ' ') p++;
        if (i == phrases) {
            *error = sqlite3_mprintf("sqlitebin_bm25(): counts names more than the %d phrases of the query: '%s'",
                                     phrases, text);
            return -1;
        }
        for (star = start; star < p && *star != '*'; star++) {}
        if (star - start == 1 && *start == '?') {
            counts[i] = -1.0;
        } else if (star - start == 1 && *start == '-') {
            counts[i] = -2.0;
        } else {
            char *end;
            double value = strtod(start, &end);
            if (star == start || end != star || !(value >= 0.0) || isinf(value)) {
                *error = sqlite3_mprintf("sqlitebin_bm25(): each word of counts must be ?, - or a document count of "
                                         "0 or more, optionally followed by *weight, got '%.*s'", (int)(p - start), start);
                return -1;
            }
            counts[i] = value;
        }
        weights[i] = 1.0;
        if (star < p) {
            char *end;
            double value = strtod(star + 1, &end);
            if (star + 1 == p || end != p || !(value > 0.0) || isinf(value)) {
                *error = sqlite3_mprintf("sqlitebin_bm25(): a weight in counts must be a number above 0, got '%.*s'",
                                         (int)(p - start), start);
                return -1;
            }
            weights[i] = value;
        }
        i++;
    }
    if (i != phrases) {
        *error = sqlite3_mprintf("sqlitebin_bm25(): counts names %d phrases but the query has %d: '%s'",
                                 i, phrases, text);
        return -1;
    }
    return 0;
}

/* The per-query state, made on the first row. Returns SQLITE_OK, or an error code with *error set when an
   argument is wrong. */
static int sqlitebin_bm25_data(const Fts5ExtensionApi *api, Fts5Context *fts, int nargs, sqlite3_value **args,
                               SqlitebinBm25 **out, char **error) {
    SqlitebinBm25 *data = (SqlitebinBm25 *)api->xGetAuxdata(fts, 0);
    sqlite3_int64 rows = 0, tokens = 0, k = 0, bytes;
    double counted_in = 0.0;
    const char *counts = 0;
    int phrases, i, rc;
    if (data) {
        *out = data;
        return SQLITE_OK;
    }
    if (nargs != 3) {
        *error = sqlite3_mprintf("sqlitebin_bm25(): takes the table and 3 arguments (k, counts, counted_in), got %d",
                                 nargs);
        return SQLITE_ERROR;
    }
    if (sqlite3_value_type(args[0]) != SQLITE_INTEGER || sqlite3_value_int64(args[0]) < 0
            || sqlite3_value_int64(args[0]) > SQLITEBIN_BM25_MAX_K) {
        *error = sqlite3_mprintf("sqlitebin_bm25(): k must be an integer from 0 to %d, got %s", SQLITEBIN_BM25_MAX_K,
                                 sqlite3_value_type(args[0]) == SQLITE_NULL ? "NULL" : (const char *)sqlite3_value_text(args[0]));
        return SQLITE_ERROR;
    }
    k = sqlite3_value_int64(args[0]);
    if (sqlite3_value_type(args[1]) == SQLITE_TEXT) {
        counts = (const char *)sqlite3_value_text(args[1]);
    } else if (sqlite3_value_type(args[1]) != SQLITE_NULL) {
        *error = sqlite3_mprintf("sqlitebin_bm25(): counts must be text or NULL, got %s",
                                 (const char *)sqlite3_value_text(args[1]));
        return SQLITE_ERROR;
    }
    if (sqlite3_value_type(args[2]) == SQLITE_INTEGER || sqlite3_value_type(args[2]) == SQLITE_FLOAT) {
        counted_in = sqlite3_value_double(args[2]);
    } else if (sqlite3_value_type(args[2]) != SQLITE_NULL) {
        counted_in = -1.0;
    }
    if (!(counted_in >= 0.0 && !isinf(counted_in))) {
        *error = sqlite3_mprintf("sqlitebin_bm25(): counted_in must be a document count of 0 or more, or NULL, got %s",
                                 (const char *)sqlite3_value_text(args[2]));
        return SQLITE_ERROR;
    }
    phrases = api->xPhraseCount(fts);
    bytes = (sqlite3_int64)sizeof(SqlitebinBm25) + (sqlite3_int64)phrases * 3 * sizeof(double) + k * sizeof(double);
    data = (SqlitebinBm25 *)sqlite3_malloc64(bytes);
    if (data == 0) return SQLITE_NOMEM;
    memset(data, 0, (size_t)bytes);
    data->phrases = phrases;
    data->k = (int)k;
    data->idf = (double *)&data[1];
    data->weight = data->idf + phrases;
    data->frequency = data->weight + phrases;
    data->heap = data->frequency + phrases;
    for (i = 0; i < phrases; i++) {
        data->idf[i] = -1.0;
        data->weight[i] = 1.0;
    }
    if (counts && sqlitebin_bm25_parse_counts(counts, phrases, data->idf, data->weight, error) != 0) {
        sqlite3_free(data);
        return SQLITE_ERROR;
    }
    rc = api->xRowCount(fts, &rows);
    if (rc == SQLITE_OK) rc = api->xColumnTotalSize(fts, -1, &tokens);
    if (rc == SQLITE_OK) data->average_length = (double)tokens / (double)rows;
    for (i = 0; rc == SQLITE_OK && i < phrases; i++) {
        double hits = data->idf[i];
        if (hits == -2.0) {
            data->idf[i] = 0.0;
            continue;
        }
        if (hits == -1.0) {
            sqlite3_int64 counted = 0;
            rc = api->xQueryPhrase(fts, i, (void *)&counted, sqlitebin_bm25_count);
            hits = (double)counted;
        } else if (counted_in > 0.0) {
            hits = hits * (double)rows / counted_in;
        }
        data->idf[i] = sqlitebin_bm25_idf_of(hits, (double)rows);
    }
    if (rc == SQLITE_OK) rc = api->xSetAuxdata(fts, data, sqlite3_free);
    else sqlite3_free(data);
    if (rc != SQLITE_OK) return rc;
    *out = data;
    return SQLITE_OK;
}

/* Add a score to the heap of the k best (smallest at the root). */
static void sqlitebin_bm25_keep(SqlitebinBm25 *data, double score) {
    double *heap = data->heap;
    int i, child;
    if (data->kept < data->k) {
        i = data->kept++;
        while (i > 0 && heap[(i - 1) / 2] > score) {
            heap[i] = heap[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        heap[i] = score;
        return;
    }
    if (!(score > heap[0])) return;
    i = 0;
    for (;;) {
        child = 2 * i + 1;
        if (child >= data->kept) break;
        if (child + 1 < data->kept && heap[child + 1] < heap[child]) child++;
        if (heap[child] >= score) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = score;
}

static void sqlitebin_bm25_function(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *context,
                                    int nargs, sqlite3_value **args) {
    const double k1 = SQLITEBIN_BM25_K1, b = SQLITEBIN_BM25_B;
    SqlitebinBm25 *data = 0;
    char *error = 0;
    sqlite3_int64 rowid;
    double score = 0.0, longest = 0.0, bound = 0.0;
    int rc, count = 0, i, length = 0;
    rc = sqlitebin_bm25_data(api, fts, nargs, args, &data, &error);
    if (rc != SQLITE_OK) {
        if (error) {
            sqlite3_result_error(context, error, -1);
            sqlite3_free(error);
        } else {
            sqlite3_result_error_code(context, rc);
        }
        return;
    }
    rowid = api->xRowid(fts);
    if (data->has_last && data->last_rowid == rowid) {
        if (data->last_null) sqlite3_result_null(context);
        else sqlite3_result_double(context, data->last_score);
        return;
    }
    /* The instances of each scored phrase (xInst's, without building its list of every phrase's instances). */
    for (i = 0; rc == SQLITE_OK && i < data->phrases; i++) {
        Fts5PhraseIter iterator;
        int column = -1, offset = -1;
        count = 0;
        if (data->idf[i] > 0.0) {
            rc = api->xPhraseFirst(fts, i, &iterator, &column, &offset);
            while (rc == SQLITE_OK && column >= 0) {
                count++;
                api->xPhraseNext(fts, &iterator, &column, &offset);
            }
        }
        data->frequency[i] = (double)count;
    }
    if (rc != SQLITE_OK) {
        sqlite3_result_error_code(context, rc);
        return;
    }
    if (data->k > 0 && data->kept == data->k) {
        /* The row holds at least `longest` tokens (each instance of a phrase starts at its own position), and a
           phrase's share only grows as the row gets shorter. */
        for (i = 0; i < data->phrases; i++) {
            if (data->frequency[i] > longest && data->idf[i] > 0.0) longest = data->frequency[i];
        }
        for (i = 0; i < data->phrases; i++) {
            double f = data->frequency[i];
            if (f > 0.0 && data->idf[i] > 0.0) {
                bound += data->weight[i] * (data->idf[i] * ((f * (k1 + 1.0))
                                                            / (f + k1 * (1 - b + b * longest / data->average_length))));
            }
        }
        if (bound * (1.0 + SQLITEBIN_BM25_BOUND_MARGIN) < data->heap[0]) {
            data->has_last = 1;
            data->last_rowid = rowid;
            data->last_null = 1;
            sqlite3_result_null(context);
            return;
        }
    }
    rc = api->xColumnSize(fts, -1, &length);
    if (rc != SQLITE_OK) {
        sqlite3_result_error_code(context, rc);
        return;
    }
    for (i = 0; i < data->phrases; i++) {
        if (data->idf[i] > 0.0) {
            score += data->weight[i] * (data->idf[i] * ((data->frequency[i] * (k1 + 1.0))
                                     / (data->frequency[i] + k1 * (1 - b + b * (double)length / data->average_length))));
        }
    }
    if (data->k > 0) sqlitebin_bm25_keep(data, score);
    data->has_last = 1;
    data->last_rowid = rowid;
    data->last_null = 0;
    data->last_score = -1.0 * score;
    sqlite3_result_double(context, -1.0 * score);
}

/* Register `sqlitebin_bm25` on `db`. A SQLite built without FTS5 has nothing to register it with: not an error. */
static int sqlitebin_register_bm25(sqlite3 *db, char **error) {
    fts5_api *api = sqlitebin_fts5_api(db);  /* tokenizer.h */
    int rc;
    if (api == 0) return SQLITE_OK;
    rc = api->xCreateFunction(api, "sqlitebin_bm25", 0, sqlitebin_bm25_function, 0);
    if (rc != SQLITE_OK && error) *error = sqlite3_mprintf("sqlitebin: cannot register the sqlitebin_bm25() function");
    return rc;
}

#endif
