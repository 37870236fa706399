"""Write tests/data/sqlitebin-formatN.sqlite: `sqlitebin` virtual tables in an earlier storage format,
as the code that wrote that format made them:
- format 1 (commit b8b0cca): 64 vectors per N_vectors row, each rowid as 8 bytes in its chunk;
- format 2 (commit cf87d84): N_vectors rows sized to the page, each rowid as 8 bytes in its chunk.

Run with that code built: `python tests/data/make_old_format_database.py N`. The format test opens these
files with the current code, which must read and write each in its own format.

Three tables, vectors from `vectors(seed, n, dim)` below (the test makes the same ones):
- `v_int8`: dim 20, rescore int8, chunk_size 64, calibration_rows 64; rowids 1-300; rowids divisible
  by 7 deleted; rowid 10 given vector 300 of the same seed.
- `v_float32`: dim 33, rescore float32, chunk_size 128; rowids 1001-1200; rowid 1005 moved to 5000.
- `v_none`: dim 70, rescore none; rowids 1-100.
"""

import sys
from pathlib import Path

import apsw
import numpy as np

import sqlitebin



def vectors(seed, n, dim):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype("<f4")


def main(format_version):
    output = Path(__file__).with_name(f"sqlitebin-format{format_version}.sqlite")
    output.unlink(missing_ok=True)
    conn = apsw.Connection(str(output))
    sqlitebin.load(conn)
    with conn:
        conn.execute("CREATE VIRTUAL TABLE v_int8 USING sqlitebin(dim=20, rescore=int8, chunk_size=64, "
                     "calibration_rows=64)")
        data = vectors(1, 301, 20)
        for i in range(300):
            conn.execute("INSERT INTO v_int8(rowid, vector) VALUES (?, ?)", (i + 1, data[i].tobytes()))
        conn.execute("DELETE FROM v_int8 WHERE rowid % 7 = 0")
        conn.execute("UPDATE v_int8 SET vector = ? WHERE rowid = 10", (data[300].tobytes(),))
        conn.execute("CREATE VIRTUAL TABLE v_float32 USING sqlitebin(dim=33, rescore=float32, chunk_size=128)")
        data = vectors(2, 200, 33)
        for i in range(200):
            conn.execute("INSERT INTO v_float32(rowid, vector) VALUES (?, ?)", (1001 + i, data[i].tobytes()))
        conn.execute("UPDATE v_float32 SET rowid = 5000 WHERE rowid = 1005")
        conn.execute("CREATE VIRTUAL TABLE v_none USING sqlitebin(dim=70, rescore=none)")
        data = vectors(3, 100, 70)
        for i in range(100):
            conn.execute("INSERT INTO v_none(rowid, vector) VALUES (?, ?)", (i + 1, data[i].tobytes()))
    conn.execute("VACUUM")
    conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
