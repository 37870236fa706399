"""NumPy brute-force search, the independent oracle for every search path.

It re-derives codes, int8 vectors and scores from the float vectors with plain
NumPy, following the formulas in the README, and never calls sqlitebin.
"""

import numpy as np


def normalize(vectors):
    """Rows scaled to unit length in float32, as ingest stores them (int8 rounding depends on the exact floats)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)


class Oracle:
    """Brute-force search over {id: float vector}, mirroring a collection's settings.

    `ranges` are the int8 ranges, or a function returning them (the index calibrates them once it
    holds enough rows; until then, None, int8 rescoring uses the exact float32 vectors).
    `thresholds` set the code bits (default 0). `set(..., codes=)` gives the codes explicitly,
    for data whose codes were not computed from these vectors (a migrated database).
    """

    def __init__(self, dim, ranges=None, thresholds=None):
        self.dim = dim
        self._ranges = ranges
        self.thresholds = np.zeros(dim, np.float32) if thresholds is None else np.asarray(thresholds, np.float32)
        self.vectors = {}
        self.codes = {}

    @property
    def ranges(self):
        return self._ranges() if callable(self._ranges) else self._ranges

    def set(self, ids, vectors, codes=None, normalized=False):
        vectors = np.asarray(vectors, dtype=np.float32) if normalized else normalize(vectors)
        for position, (i, v) in enumerate(zip(ids, vectors)):
            self.vectors[int(i)] = v
            if codes is not None:
                self.codes[int(i)] = np.unpackbits(np.asarray(codes[position], np.uint8))[:self.dim].astype(bool)
            else:
                self.codes.pop(int(i), None)

    def delete(self, ids):
        for i in ids:
            self.vectors.pop(int(i), None)
            self.codes.pop(int(i), None)

    def _arrays(self, allowed=None):
        ids = np.array(sorted(i for i in self.vectors if allowed is None or i in allowed), dtype=np.int64)
        matrix = np.array([self.vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)
        return ids, matrix

    def search(self, query, k, oversample, candidates, rescore, allowed=None):
        """[(id, score, distance)] best first, as Collection.search should return them."""
        ids, matrix = self._arrays(allowed)
        if len(ids) == 0:
            return []
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1)).astype(np.float32)[0]
        bits = np.array([self.codes[i] if i in self.codes else self.vectors[i] > self.thresholds for i in ids],
                        dtype=bool).reshape(len(ids), self.dim)
        query_bits = q > self.thresholds
        distance = (bits != query_bits).sum(axis=1)
        signs = np.where(bits, 1.0, -1.0)
        estimate = signs @ q.astype(np.float64) / np.sqrt(self.dim)
        count = min(len(ids), k * oversample)
        if candidates == "hamming":
            order = np.lexsort((ids, distance))[:count]
            estimate = 1.0 - 2.0 * distance / self.dim
        else:
            order = np.lexsort((ids, -estimate))[:count]
        if rescore == "float32":
            score = matrix.astype(np.float64) @ q
        elif rescore == "int8" and self.ranges is None:
            score = matrix.astype(np.float64) @ q
        elif rescore == "int8":
            score = dequantize_int8(quantize_int8(matrix, self.ranges), self.ranges).astype(np.float64) @ q
        elif rescore == "bits":
            score = signs @ q.astype(np.float64) / np.sqrt(self.dim)
        else:
            score = estimate
        chosen = order[np.lexsort((ids[order], -score[order]))][:k]
        return [(int(ids[i]), float(score[i]), int(distance[i])) for i in chosen]


def quantize_int8(vectors, ranges):
    dim = vectors.shape[1]
    low, high = ranges[:dim], ranges[dim:]
    out = np.full(vectors.shape, -128, dtype=np.int8)
    spread = high - low
    ok = spread > 0
    level = np.rint(((vectors[:, ok] - low[ok]) * np.float32(255)) / spread[ok])
    out[:, ok] = (np.clip(level, 0, 255) - 128).astype(np.int8)
    return out


def dequantize_int8(codes, ranges):
    dim = codes.shape[1]
    low, high = ranges[:dim], ranges[dim:]
    return low + (codes.astype(np.float32) + 128) * (high - low) / np.float32(255)
