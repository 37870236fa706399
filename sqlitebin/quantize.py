"""NumPy versions of the extension's quantizers, for bulk ingest.

Ingest quantizes whole batches here instead of calling the SQL functions row
by row; the formulas are the ones written in ext/quantize.pxi and ext/functions.pxi (`int8_code`,
`binary_quantize_sql`) and the tests hold the two to the same bytes.

Bit layout: bit i of a vector is bit `7 - i % 8` of byte `i // 8`, set where
the value is above its threshold, i.e. `numpy.packbits(v > t)`.
int8: code = clamp(rint((v - low) * 255 / (high - low)), 0, 255) - 128 in
float32 (-128 where high == low); value = low + (code + 128) * (high - low) / 255.
"""

import numpy as np

FLOAT32 = np.dtype("<f4")


def as_float32_matrix(function, vectors, dim=None):
    """Check and convert `vectors` to a C-contiguous little-endian float32 (n, dim) array."""
    try:
        array = np.asarray(vectors, dtype=FLOAT32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{function}: vectors must be numeric arrays ({error})") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(f"{function}: vectors must be 2-D (n, dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{function}: vectors have dimension {array.shape[1]} but the collection has {dim}")
    if not np.isfinite(array).all():
        row, column = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{function}: vector {row} holds a non-finite value ({array[row, column]}) at index {column}")
    return np.ascontiguousarray(array)


def normalize(vectors):
    """L2-normalise rows; zero rows stay zero (so scores are cosine similarities)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(FLOAT32)


def binary_quantize(vectors, thresholds=None):
    """Pack (n, d) floats into (n, ceil(d/8)) uint8 codes: bit set where value > threshold."""
    if thresholds is None:
        return np.packbits(vectors > 0, axis=1)
    return np.packbits(vectors > np.asarray(thresholds, dtype=FLOAT32), axis=1)


def calibrate_ranges(vectors):
    """Per-dimension int8 ranges from sample vectors: d minimums then d maximums.

    The observed span is widened by 5% on each side so later data a little
    outside the sample is not clipped; with fewer than 32 samples every
    dimension gets the same symmetric range from the largest magnitude seen.
    """
    vectors = np.asarray(vectors, dtype=FLOAT32)
    dim = vectors.shape[1]
    if len(vectors) < 32:
        bound = float(np.abs(vectors).max()) * 1.5 if vectors.size else 1.0
        bound = bound if bound > 0 else 1.0
        low, high = np.full(dim, -bound, FLOAT32), np.full(dim, bound, FLOAT32)
    else:
        low, high = vectors.min(axis=0), vectors.max(axis=0)
        margin = (high - low) * np.float32(0.05)
        low, high = low - margin, high + margin
    return np.concatenate([low, high]).astype(FLOAT32)


def int8_quantize(vectors, ranges):
    """(n, d) floats to (n, d) int8 codes with the per-dimension ranges."""
    vectors = np.asarray(vectors, dtype=FLOAT32)
    dim = vectors.shape[1]
    low, high = ranges[:dim], ranges[dim:]
    spread = high - low
    safe_spread = np.where(spread > 0, spread, np.float32(1))
    level = np.rint(((vectors - low) * np.float32(255)) / safe_spread)
    codes = (np.clip(level, 0, 255) - 128).astype(np.int8)
    codes[:, ~(spread > 0)] = -128
    return codes


def int8_dequantize(codes, ranges):
    """Inverse of int8_quantize, up to rounding."""
    dim = codes.shape[1]
    low, high = ranges[:dim], ranges[dim:]
    return low + (codes.astype(FLOAT32) + np.float32(128)) * (high - low) / np.float32(255)


def unpack_signs(codes, dim):
    """(n, bytes) packed codes to (n, dim) float32 of +1/-1."""
    bits = np.unpackbits(codes, axis=1)[:, :dim]
    return bits.astype(FLOAT32) * 2 - 1
