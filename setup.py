"""Build sqlitebin: the Python package and the SQLite loadable extension.

The extension is compiled from Cython but is a plain SQLite extension, not a
Python module: it is linked so that only `sqlite3_sqlitebin_init` is exported
and every section unreachable from it (Cython's Python-facing module code) is
dropped. The result has no Python symbols, so the `sqlite3` shell loads it as
well as apsw does, and it never links libsqlite3: SQLite's routines arrive
through the pointer given to the entry point.

A second shared object, sqlitebin/sqlitebin_preload.so (plain C, ext/preload.c),
registers the extension in processes that never load extensions (dqlite nodes)
when given in LD_PRELOAD.
"""

import glob
import os
import re
import shutil
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "sqlitebin", "version.py"), encoding="utf-8") as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


VERSION = read_version()


class BuildSQLiteExtension(build_ext):
    """build_ext for a SQLite extension: check prerequisites, name the file, skip libpython."""

    def run(self):
        self.check_prerequisites()
        super().run()

    def check_prerequisites(self):
        compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
        if shutil.which(compiler) is None:
            sys.exit(f"sqlitebin: no C compiler found ({compiler!r}); install one, e.g. `apt-get install gcc`.")
        include_dirs = self.include_dirs or []
        candidates = include_dirs + ["/usr/include", "/usr/local/include", "/opt/homebrew/include"]
        if not any(os.path.exists(os.path.join(d, "sqlite3ext.h")) for d in candidates):
            sys.exit(
                "sqlitebin: SQLite's development headers (sqlite3ext.h) were not found; install them, "
                "e.g. `apt-get install libsqlite3-dev` (Debian/Ubuntu) or `dnf install sqlite-devel` (Fedora)."
            )

    def get_ext_filename(self, fullname):
        # sqlitebin/sqlitebin.so: SQLite derives the entry point sqlite3_sqlitebin_init from
        # the file name, and the file carries no Python ABI tag because it is not a Python module.
        return os.path.join(*fullname.split(".")) + ".so"

    def get_libraries(self, ext):
        # Never link libpython: the shell has no Python, and nothing here calls it.
        return list(ext.libraries)


def extensions():
    from Cython.Build import cythonize

    extension = Extension(
        "sqlitebin.sqlitebin",
        sources=["ext/sqlitebin.pyx"],
        include_dirs=["ext"],
        libraries=["m"],
        define_macros=[("SQLITEBIN_VERSION", f'"{VERSION}"')],
        extra_compile_args=["-O3", "-pthread", "-ffunction-sections", "-fdata-sections", "-Wno-unused-function"],
        extra_link_args=["-pthread", "-Wl,--gc-sections", "-Wl,--version-script=" + os.path.join("ext", "sqlitebin.map")],
        depends=["ext/kernels.h", "ext/scan_kernels.h", "ext/scan_threads.h", "ext/tokenizer.h", "ext/bm25.h", "ext/sqlite3ext.pxd",
                 "ext/sqlitebin.map"] + sorted(glob.glob(os.path.join(HERE, "ext", "*.pxi"))),
    )
    # sqlitebin/sqlitebin_preload.so: LD_PRELOAD it into a process that never loads extensions
    # (a dqlite node) to register sqlitebin.so in every connection; see ext/preload.c.
    preload = Extension(
        "sqlitebin.sqlitebin_preload",
        sources=["ext/preload.c"],
        libraries=["dl", "pthread"],
        extra_compile_args=["-O2", "-Wall"],
    )
    return cythonize([extension], include_path=["ext"], compiler_directives={"language_level": "3"}) + [preload]


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="sqlitebin",
    version=VERSION,
    description="Binary-quantized embedding search inside SQLite: hamming() and fast top-k with rescoring",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["sqlitebin", "sqlitebin.*"]),
    package_data={"sqlitebin": ["data/*.gz", "data/*.md", "templates/*.html"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildSQLiteExtension},
    install_requires=["apsw>=3.40", "numpy>=1.24", "wordllama>=0.4", "click>=8.0", "tqdm>=4.0"],
    extras_require={
        # The integrations' tests run in the default suite (they skip only when a package is absent).
        "test": ["pytest>=7", "hypothesis>=6", "datasette>=0.64,<1.0", "sqlite-utils>=3.35", "selenium>=4", "sqlean.py",
                 "pysqlite3-binary; sys_platform == 'linux' and platform_machine == 'x86_64'",
                 "pytest-asyncio>=0.23", "langchain-core>=0.3", "langchain-tests>=0.3", "llama-index-core>=0.12",
                 "model2vec>=0.4", "dask[distributed]>=2023.1"],
        "bench": ["sqlite-vec", "faiss-cpu", "usearch", "matplotlib"],
        "datasette": ["datasette>=0.64,<1.0"],
        "sqlite-utils": ["sqlite-utils>=3.35"],
        "langchain": ["langchain-core>=0.3"],
        "llama-index": ["llama-index-core>=0.12"],
        "model2vec": ["model2vec>=0.4"],
        "dask": ["dask[distributed]>=2023.1"],
    },
    entry_points={
        "console_scripts": ["sqlitebin=sqlitebin.cli:main"],
        "datasette": ["sqlitebin=sqlitebin.datasette_plugin"],
        "sqlite_utils": ["sqlitebin=sqlitebin.sqlite_utils_plugin"],
    },
    zip_safe=False,
)
