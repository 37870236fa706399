#!/usr/bin/env bash
# Run the extension's tests under AddressSanitizer and UndefinedBehaviorSanitizer.
#
# Builds sqlitebin.so with -fsanitize=address,undefined in a temporary copy of the checkout (the
# checkout's own build is left alone), then runs the tests that drive the extension against that
# copy with the sanitizer runtimes preloaded into Python. Any sanitizer report stops the run.
# Prints PASS or FAIL on the last line, and exits 0 or 1.
#
#     scripts/check_memory.sh                  # the extension's tests and the fast fuzz subset
#     scripts/check_memory.sh --long 10000     # also the long fuzz run, 10,000 cases per function
#
# Leak detection is off: CPython frees little at exit by design, so leak reports would be noise.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LONG=""
if [ "${1:-}" = "--long" ]; then
    LONG=${2:?"--long needs a number of cases per function"}
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sqlitebin-asan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cp -r "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/ext" "$ROOT/sqlitebin" "$ROOT/tests" \
    "$ROOT/scripts" "$WORK/"
rm -rf "$WORK/build" "$WORK/sqlitebin/sqlitebin.so" "$WORK"/ext/sqlitebin.c
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +

echo "Building the extension with -fsanitize=address,undefined in $WORK ..."
# asan-globals=0: instrumenting globals registers every one of them at load time, which keeps
# Cython's Python-facing module code alive through --gc-sections (and with it references to libpython,
# so the sqlite3 shell could not load the build). Heap and stack accesses are still checked.
SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g --param asan-globals=0"
if ! (cd "$WORK" && CFLAGS="$SANITIZE" LDFLAGS="$SANITIZE" python setup.py build_ext --inplace >build.log 2>&1); then
    tail -30 "$WORK/build.log"
    echo "FAIL: the sanitized build did not compile"
    exit 1
fi
if ! ldd "$WORK/sqlitebin/sqlitebin.so" | grep -q libasan; then
    echo "FAIL: the build is not linked with AddressSanitizer"
    exit 1
fi

ASAN_RUNTIME=$(gcc -print-file-name=libasan.so)
UBSAN_RUNTIME=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_RUNTIME $UBSAN_RUNTIME"
# Reports go to files (sanitizer.<pid>), not to stderr: pytest captures each test's file descriptor 2 in a
# temporary file, and a process the sanitizer stops never hands that back, so a report would vanish.
#
# detect_stack_use_after_return=1 moves instrumented frames to ASan's fake stack. With GCC (12.2 here)
# that breaks over-aligned stack objects: GCC lays out the frame against the stack it realigned to 64
# bytes, so a local array written by a 512-bit store gets an aligned store (vmovdqa64, even from
# _mm512_storeu_si512), but the fake stack's frame lands on another 64-byte phase (32 bytes off, seen
# with gdb) and the store faults: a SEGV at the store, not a memory error (a small C file with the same
# pattern and no sqlitebin code faults the same way). So AVX-512 code in ext/ keeps no vector-stored
# arrays on the stack (SQLITEBIN_EMIT8 reads lanes from the register), the option stays on for all, and
# tests/test_kernels.py::test_kernels_run_on_the_fake_stack checks the kernels for it in every test run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1:log_path=$WORK/sanitizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$WORK/sanitizer"
export PYTHONMALLOC=malloc          # Python's objects get ASan's red zones too
export PYTHONPATH="$WORK"           # the sanitized copy, for the tests and the worker scripts they start
cd "$WORK"

LOADED=$(python -c "import sqlitebin; print(sqlitebin.loadable_path())")
if [ "$LOADED" != "$WORK/sqlitebin/sqlitebin.so" ]; then
    echo "FAIL: the tests would load $LOADED, not the sanitized build"
    exit 1
fi

TESTS=(tests/test_sql_functions.py tests/test_vtable.py tests/test_vtable_random.py tests/test_vtable_shared.py
       tests/test_vtable_format.py tests/test_vtable_vector_cache.py
       tests/test_index_scan.py tests/test_search_many.py tests/test_collection.py tests/test_hybrid.py tests/test_keyword.py
       tests/test_bm25.py
       tests/test_reliability_input.py tests/test_fuzz.py
       "tests/test_reliability_load.py::test_threads_each_with_a_connection")
echo "Running ${TESTS[*]} under the sanitizers ..."
python -m pytest -q -p no:warnings -p no:cacheprovider "${TESTS[@]}" 2>&1 | tee "$WORK/pytest.log"
STATUS=${PIPESTATUS[0]}
if [ "$STATUS" -eq 0 ] && [ -n "$LONG" ]; then
    echo "Running the long fuzz run, $LONG cases per function ..."
    SQLITEBIN_FUZZ_EXAMPLES=$LONG python -m pytest -q -p no:warnings -p no:cacheprovider -m slow tests/test_fuzz.py \
        2>&1 | tee -a "$WORK/pytest.log"
    STATUS=${PIPESTATUS[0]}
fi

if compgen -G "$WORK/sanitizer.*" >/dev/null; then
    cat "$WORK"/sanitizer.* | tee -a "$WORK/pytest.log"
fi
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer" "$WORK/pytest.log"; then
    echo "FAIL: the sanitizers reported errors (above)"
    exit 1
fi
if [ "$STATUS" -ne 0 ]; then
    echo "FAIL: the tests failed under the sanitizers (exit status $STATUS)"
    exit 1
fi
echo "PASS: no AddressSanitizer or UndefinedBehaviorSanitizer errors"
