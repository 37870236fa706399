/* The `sqlitebin_cjk` FTS5 tokenizer: another FTS5 tokenizer (by default `porter unicode61`) whose tokens are
   passed on unchanged, except that Chinese, Japanese and Korean text is cut into overlapping pairs of characters.

   unicode61 keeps a run of CJK characters as one token, since these languages do not separate words with spaces:
   "東京は日本の首都です" is a single token, so a search for 東京 finds nothing. Overlapping bigrams (東京 京は は日
   日本 ...) are the usual answer without a dictionary: a query word of two or more characters becomes the phrase of
   its bigrams, found wherever it occurs; a single character stays a token of its own. Everything else (Latin text,
   stemming, case folding) is the wrapped tokenizer's.

       CREATE VIRTUAL TABLE t USING fts5(text, tokenize = 'sqlitebin_cjk porter unicode61')

   The first argument names the wrapped tokenizer, the rest are its arguments; no argument means `porter unicode61`.
   Registered on each connection by the entry point through the fts5_api pointer (https://sqlite.org/fts5.html,
   "Custom Tokenizers"). Included after SQLITE_EXTENSION_INIT1, so every sqlite3_* call goes through the API
   pointer. No global state: FTS5 copies the tokenizer struct it is given. */

#ifndef SQLITEBIN_TOKENIZER_H
#define SQLITEBIN_TOKENIZER_H

#include <string.h>

typedef struct SqlitebinCjkTokenizer {
    fts5_tokenizer inner_methods;
    Fts5Tokenizer *inner;
} SqlitebinCjkTokenizer;

typedef struct SqlitebinCjkContext {
    void *context;
    int (*emit)(void *, int, const char *, int, int, int);
} SqlitebinCjkContext;

/* Hiragana, katakana, CJK ideographs (with extension A, compatibility ideographs and the supplementary planes),
   Hangul syllables and half-width katakana. */
static int sqlitebin_is_cjk(unsigned int c) {
    return (c >= 0x3040 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) || (c >= 0x3400 && c <= 0x4DBF)
        || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0xF900 && c <= 0xFAFF)
        || (c >= 0xFF66 && c <= 0xFF9F) || (c >= 0x20000 && c <= 0x3FFFF);
}

/* The code point starting at s[0] (n > 0 bytes left) and its length in bytes; a byte that does not start a valid
   sequence is taken alone (FTS5 hands tokenizers valid UTF-8, this only keeps a bad input from over-reading). */
static unsigned int sqlitebin_utf8_next(const unsigned char *s, int n, int *length) {
    unsigned int c = s[0];
    int need = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    int i;
    if (c < 0x80 || need == 0 || need >= n) {
        *length = 1;
        return c;
    }
    c &= 0x3F >> need;
    for (i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *length = 1;
            return s[0];
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *length = need + 1;
    return c;
}

static int sqlitebin_cjk_token(void *pContext, int flags, const char *token, int size, int start, int end) {
    SqlitebinCjkContext *context = (SqlitebinCjkContext *)pContext;
    const unsigned char *text = (const unsigned char *)token;
    /* Offsets of a piece within the original text, when the token is the text as it was (CJK is not case-folded). */
    int exact = (end - start) == size;
    int position = 0, rc = SQLITE_OK, first = 1;
    int has_cjk = 0, length, scan;
    for (scan = 0; scan < size; scan += length) {
        if (sqlitebin_is_cjk(sqlitebin_utf8_next(text + scan, size - scan, &length))) {
            has_cjk = 1;
            break;
        }
    }
    if (!has_cjk) return context->emit(context->context, flags, token, size, start, end);
    while (position < size && rc == SQLITE_OK) {
        int run_end = position, run_chars = 0, is_cjk;
        unsigned int c = sqlitebin_utf8_next(text + position, size - position, &length);
        is_cjk = sqlitebin_is_cjk(c);
        /* The run of CJK, or of other characters, that starts here. */
        while (run_end < size) {
            int piece;
            unsigned int d = sqlitebin_utf8_next(text + run_end, size - run_end, &piece);
            if (sqlitebin_is_cjk(d) != is_cjk) break;
            run_end += piece;
            run_chars++;
        }
        if (!is_cjk || run_chars == 1) {
            rc = context->emit(context->context, first ? flags : 0, token + position, run_end - position,
                               exact ? start + position : start, exact ? start + run_end : end);
            first = 0;
        } else {
            /* Each pair of neighbouring characters of the run. */
            int pair_start = position;
            while (rc == SQLITE_OK) {
                int first_length, second_length;
                sqlitebin_utf8_next(text + pair_start, run_end - pair_start, &first_length);
                if (pair_start + first_length >= run_end) break;
                sqlitebin_utf8_next(text + pair_start + first_length, run_end - pair_start - first_length,
                                    &second_length);
                rc = context->emit(context->context, first ? flags : 0, token + pair_start,
                                   first_length + second_length, exact ? start + pair_start : start,
                                   exact ? start + pair_start + first_length + second_length : end);
                first = 0;
                pair_start += first_length;
            }
        }
        position = run_end;
    }
    return rc;
}

static int sqlitebin_cjk_create(void *pUserData, const char **arguments, int count, Fts5Tokenizer **out) {
    fts5_api *api = (fts5_api *)pUserData;
    static const char *default_arguments[] = {"porter", "unicode61"};
    SqlitebinCjkTokenizer *tokenizer;
    void *inner_data = 0;
    int rc;
    if (count == 0) {
        arguments = default_arguments;
        count = 2;
    }
    tokenizer = (SqlitebinCjkTokenizer *)sqlite3_malloc64(sizeof(SqlitebinCjkTokenizer));
    if (tokenizer == 0) return SQLITE_NOMEM;
    memset(tokenizer, 0, sizeof(*tokenizer));
    rc = api->xFindTokenizer(api, arguments[0], &inner_data, &tokenizer->inner_methods);
    if (rc == SQLITE_OK) {
        rc = tokenizer->inner_methods.xCreate(inner_data, arguments + 1, count - 1, &tokenizer->inner);
    }
    if (rc != SQLITE_OK) {
        sqlite3_free(tokenizer);
        return rc;
    }
    *out = (Fts5Tokenizer *)tokenizer;
    return SQLITE_OK;
}

static void sqlitebin_cjk_delete(Fts5Tokenizer *pTokenizer) {
    SqlitebinCjkTokenizer *tokenizer = (SqlitebinCjkTokenizer *)pTokenizer;
    if (tokenizer->inner) tokenizer->inner_methods.xDelete(tokenizer->inner);
    sqlite3_free(tokenizer);
}

static int sqlitebin_cjk_tokenize(Fts5Tokenizer *pTokenizer, void *pContext, int flags, const char *text, int size,
                                  int (*emit)(void *, int, const char *, int, int, int)) {
    SqlitebinCjkTokenizer *tokenizer = (SqlitebinCjkTokenizer *)pTokenizer;
    SqlitebinCjkContext context;
    context.context = pContext;
    context.emit = emit;
    return tokenizer->inner_methods.xTokenize(tokenizer->inner, &context, flags, text, size, sqlitebin_cjk_token);
}

/* Register `sqlitebin_cjk` on `db`. A SQLite built without FTS5 has nothing to register it with: not an error. */
/* The connection's fts5_api (version 2 or later), or 0 when its SQLite has no FTS5: then there is
 * nothing to register with, which is not an error. Shared with bm25.h. */
static fts5_api *sqlitebin_fts5_api(sqlite3 *db) {
    fts5_api *api = 0;
    sqlite3_stmt *statement = 0;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &statement, 0) != SQLITE_OK) {
        sqlite3_finalize(statement);
        return 0;
    }
    sqlite3_bind_pointer(statement, 1, (void *)&api, "fts5_api_ptr", 0);
    sqlite3_step(statement);
    sqlite3_finalize(statement);
    return api != 0 && api->iVersion >= 2 ? api : 0;
}

static int sqlitebin_register_tokenizer(sqlite3 *db, char **error) {
    fts5_api *api = sqlitebin_fts5_api(db);
    fts5_tokenizer methods;
    int rc;
    if (api == 0) return SQLITE_OK;
    methods.xCreate = sqlitebin_cjk_create;
    methods.xDelete = sqlitebin_cjk_delete;
    methods.xTokenize = sqlitebin_cjk_tokenize;
    rc = api->xCreateTokenizer(api, "sqlitebin_cjk", (void *)api, &methods, 0);
    if (rc != SQLITE_OK && error) *error = sqlite3_mprintf("sqlitebin: cannot register the sqlitebin_cjk tokenizer");
    return rc;
}

#endif
