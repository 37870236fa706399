"""Write tests/data/sqlitebin-format1.sqlite: `sqlitebin` virtual tables in storage format 1, as the
0.2.0 development code wrote them (each rowid kept in its chunk as well as in N_rowids, 64 vectors per
N_vectors row).

Run with that code (commit b8b0cca) built: `python tests/data/make_format1_database.py`. The format test
opens this file with the current code, which must read and write it in its own format.

Three tables, vectors from `vectors(seed, n, dim)` below (the test makes the same ones):
- `v_int8`: dim 20, rescore int8, chunk_size 64, calibration_rows 64; rowids 1-300; rowids divisible
  by 7 deleted; rowid 10 given vector 300 of the same seed.
- `v_float32`: dim 33, rescore float32, chunk_size 128; rowids 1001-1200; rowid 1005 moved to 5000.
- `v_none`: dim 70, rescore none; rowids 1-100.
"""

from pathlib import Path

import apsw
import numpy as np

import sqlitebin

OUTPUT = Path(__file__).with_name("sqlitebin-format1.sqlite")


def vectors(seed, n, dim):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype("<f4")


def main():
    OUTPUT.unlink(missing_ok=True)
    conn = apsw.Connection(str(OUTPUT))
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
    main()
