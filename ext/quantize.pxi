# The bit and int8 formulas, written once (sqlitebin/quantize.py mirrors them): the scalar
# functions and the virtual table's storage both quantize through these.

cdef inline int8_t int8_code(float value, float low, float high) noexcept nogil:
    """The int8 formula, written once (sqlitebin/quantize.py mirrors it):
    code = clamp(rint((v - low) * 255 / (high - low)), 0, 255) - 128 in float32,
    and -128 where high == low. Dequantized: low + (code + 128) * (high - low) / 255."""
    cdef float scale = 255
    cdef float level
    if not (high > low):
        return -128
    level = rintf(((value - low) * scale) / (high - low))
    if level < 0:
        level = 0
    elif level > 255:
        level = 255
    return <int8_t>(<int>level - 128)


cdef inline float int8_value(int8_t code, float low, float high) noexcept nogil:
    cdef float scale = 255
    return low + (<float>(<int>code + 128)) * (high - low) / scale
