# Declarations of the SQLite loadable-extension API, from the system's sqlite3ext.h.
#
# sqlite3ext.h turns every sqlite3_* call below into a call through the
# `sqlite3_api` routines pointer that SQLite hands to the entry point, so the
# compiled extension never links libsqlite3: it uses whichever SQLite loaded it
# (apsw's private copy, the system library, the sqlite3 shell).

from libc.stdint cimport int64_t

cdef extern from "sqlite3ext.h" nogil:
    ctypedef struct sqlite3
    ctypedef struct sqlite3_context
    ctypedef struct sqlite3_value
    ctypedef struct sqlite3_stmt
    ctypedef struct sqlite3_api_routines
    ctypedef int64_t sqlite3_int64

    enum:
        SQLITE_OK
        SQLITE_ERROR
        SQLITE_NOMEM
        SQLITE_CONSTRAINT
        SQLITE_ROW
        SQLITE_DONE
        SQLITE_TOOBIG
        SQLITE_UTF8
        SQLITE_DETERMINISTIC
        SQLITE_INNOCUOUS
        SQLITE_DIRECTONLY
        SQLITE_INTEGER
        SQLITE_FLOAT
        SQLITE_TEXT
        SQLITE_BLOB
        SQLITE_NULL
        SQLITE_INDEX_CONSTRAINT_EQ
        SQLITE_INDEX_CONSTRAINT_LIMIT
        SQLITE_VTAB_INNOCUOUS
        SQLITE_VTAB_DIRECTONLY
        SQLITE_VTAB_CONSTRAINT_SUPPORT
        SQLITE_INDEX_CONSTRAINT_MATCH
        SQLITE_INDEX_SCAN_UNIQUE
        SQLITE_CORRUPT_VTAB
        SQLITE_ABORT
        SQLITE_ROLLBACK
        SQLITE_IGNORE
        SQLITE_FAIL
        SQLITE_REPLACE
        SQLITE_MISUSE

    ctypedef void (*sqlite3_destructor_type)(void*)
    sqlite3_destructor_type SQLITE_TRANSIENT
    sqlite3_destructor_type SQLITE_STATIC

    int sqlite3_create_function_v2(
        sqlite3 *db, const char *zFunctionName, int nArg, int eTextRep, void *pApp,
        void (*xFunc)(sqlite3_context*, int, sqlite3_value**) noexcept nogil,
        void (*xStep)(sqlite3_context*, int, sqlite3_value**) noexcept nogil,
        void (*xFinal)(sqlite3_context*) noexcept nogil,
        void (*xDestroy)(void*) noexcept nogil)

    int sqlite3_value_type(sqlite3_value*)
    int sqlite3_value_bytes(sqlite3_value*)
    const void *sqlite3_value_blob(sqlite3_value*)
    sqlite3_int64 sqlite3_value_int64(sqlite3_value*)
    double sqlite3_value_double(sqlite3_value*)
    const unsigned char *sqlite3_value_text(sqlite3_value*)

    void sqlite3_result_int64(sqlite3_context*, sqlite3_int64)
    void sqlite3_result_double(sqlite3_context*, double)
    void sqlite3_result_null(sqlite3_context*)
    void sqlite3_result_blob(sqlite3_context*, const void*, int, void(*)(void*) noexcept nogil)
    void sqlite3_result_text(sqlite3_context*, const char*, int, void(*)(void*) noexcept nogil)
    void sqlite3_result_error(sqlite3_context*, const char*, int)
    void sqlite3_result_error_nomem(sqlite3_context*)
    void sqlite3_result_error_toobig(sqlite3_context*)

    char *sqlite3_mprintf(const char*, ...)
    void sqlite3_free(void*)
    void *sqlite3_malloc64(sqlite3_int64)
    void *sqlite3_realloc64(void*, sqlite3_int64)
    const char *sqlite3_libversion()

    # Virtual tables (the sqlitebin_knn table-valued function).
    ctypedef struct sqlite3_module
    ctypedef struct sqlite3_vtab:
        const sqlite3_module *pModule
        int nRef
        char *zErrMsg
    ctypedef struct sqlite3_vtab_cursor:
        sqlite3_vtab *pVtab

    ctypedef struct sqlite3_index_constraint:
        int iColumn
        unsigned char op
        unsigned char usable
        int iTermOffset
    ctypedef struct sqlite3_index_orderby:
        int iColumn
        unsigned char desc
    ctypedef struct sqlite3_index_constraint_usage:
        int argvIndex
        unsigned char omit
    ctypedef struct sqlite3_index_info:
        int nConstraint
        sqlite3_index_constraint *aConstraint
        int nOrderBy
        sqlite3_index_orderby *aOrderBy
        sqlite3_index_constraint_usage *aConstraintUsage
        int idxNum
        char *idxStr
        int needToFreeIdxStr
        int orderByConsumed
        double estimatedCost
        sqlite3_int64 estimatedRows
        int idxFlags

    ctypedef struct sqlite3_module:
        int iVersion
        int (*xCreate)(sqlite3*, void *pAux, int argc, const char *const*argv, sqlite3_vtab **ppVTab, char**) noexcept nogil
        int (*xConnect)(sqlite3*, void *pAux, int argc, const char *const*argv, sqlite3_vtab **ppVTab, char**) noexcept nogil
        int (*xBestIndex)(sqlite3_vtab *pVTab, sqlite3_index_info*) noexcept nogil
        int (*xDisconnect)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xDestroy)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xOpen)(sqlite3_vtab *pVTab, sqlite3_vtab_cursor **ppCursor) noexcept nogil
        int (*xClose)(sqlite3_vtab_cursor*) noexcept nogil
        int (*xFilter)(sqlite3_vtab_cursor*, int idxNum, const char *idxStr, int argc, sqlite3_value **argv) noexcept nogil
        int (*xNext)(sqlite3_vtab_cursor*) noexcept nogil
        int (*xEof)(sqlite3_vtab_cursor*) noexcept nogil
        int (*xColumn)(sqlite3_vtab_cursor*, sqlite3_context*, int) noexcept nogil
        int (*xRowid)(sqlite3_vtab_cursor*, sqlite3_int64 *pRowid) noexcept nogil
        int (*xUpdate)(sqlite3_vtab*, int, sqlite3_value **, sqlite3_int64*) noexcept nogil
        int (*xBegin)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xSync)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xCommit)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xRollback)(sqlite3_vtab *pVTab) noexcept nogil
        int (*xFindFunction)(sqlite3_vtab *pVtab, int nArg, const char *zName, void (**pxFunc)(sqlite3_context*,int,sqlite3_value**), void **ppArg) noexcept nogil
        int (*xRename)(sqlite3_vtab *pVtab, const char *zNew) noexcept nogil
        int (*xSavepoint)(sqlite3_vtab *pVTab, int) noexcept nogil
        int (*xRelease)(sqlite3_vtab *pVTab, int) noexcept nogil
        int (*xRollbackTo)(sqlite3_vtab *pVTab, int) noexcept nogil
        int (*xShadowName)(const char*) noexcept nogil

    int sqlite3_create_module_v2(sqlite3 *db, const char *zName, const sqlite3_module *p,
                                 void *pClientData, void(*xDestroy)(void*) noexcept nogil)
    int sqlite3_declare_vtab(sqlite3*, const char *zSQL)
    int sqlite3_vtab_config(sqlite3*, int op, ...)

    # Prepared statements, used by the KNN scan to read chunk rows.
    int sqlite3_prepare_v2(sqlite3 *db, const char *zSql, int nByte, sqlite3_stmt **ppStmt, const char **pzTail)
    int sqlite3_step(sqlite3_stmt*)
    int sqlite3_finalize(sqlite3_stmt*)
    int sqlite3_bind_text(sqlite3_stmt*, int, const char*, int, void(*)(void*) noexcept nogil)
    const void *sqlite3_column_blob(sqlite3_stmt*, int iCol)
    int sqlite3_column_bytes(sqlite3_stmt*, int iCol)
    sqlite3_int64 sqlite3_column_int64(sqlite3_stmt*, int iCol)
    int sqlite3_column_type(sqlite3_stmt*, int iCol)
    const unsigned char *sqlite3_column_text(sqlite3_stmt*, int iCol)
    const char *sqlite3_errmsg(sqlite3*)
    sqlite3 *sqlite3_context_db_handle(sqlite3_context*)

    # Writing and reading shadow tables (the sqlitebin virtual table).
    ctypedef struct sqlite3_blob
    int sqlite3_blob_open(sqlite3*, const char *zDb, const char *zTable, const char *zColumn,
                          sqlite3_int64 iRow, int flags, sqlite3_blob **ppBlob)
    int sqlite3_blob_reopen(sqlite3_blob*, sqlite3_int64)
    int sqlite3_blob_close(sqlite3_blob*)
    int sqlite3_blob_bytes(sqlite3_blob*)
    int sqlite3_blob_read(sqlite3_blob*, void *Z, int N, int iOffset)
    int sqlite3_blob_write(sqlite3_blob*, const void *z, int n, int iOffset)
    int sqlite3_bind_blob(sqlite3_stmt*, int, const void*, int n, void(*)(void*) noexcept nogil)
    int sqlite3_bind_null(sqlite3_stmt*, int)
    int sqlite3_bind_int64(sqlite3_stmt*, int, sqlite3_int64)
    int sqlite3_bind_value(sqlite3_stmt*, int, const sqlite3_value*)
    int sqlite3_reset(sqlite3_stmt*)
    int sqlite3_exec(sqlite3*, const char *sql, void *callback, void *, char **errmsg)
    void sqlite3_randomness(int N, void *P)
    int sqlite3_vtab_on_conflict(sqlite3*)
    int sqlite3_vtab_nochange(sqlite3_context*)
    int sqlite3_value_nochange(sqlite3_value*)
    int sqlite3_vtab_in(sqlite3_index_info*, int iCons, int bHandle)
    int sqlite3_vtab_in_first(sqlite3_value *pVal, sqlite3_value **ppOut)
    int sqlite3_vtab_in_next(sqlite3_value *pVal, sqlite3_value **ppOut)
