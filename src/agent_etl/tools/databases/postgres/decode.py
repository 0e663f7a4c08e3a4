"""Binary COPY rows -> an Arrow record batch, vectorised with numpy: no Python per row or per field.

PostgreSQL sends the rows of a ``COPY ... TO STDOUT (FORMAT binary)`` one per CopyData message, so
the reader knows where every row starts. From the row starts, the offsets of the first, second, ...
field of all rows are computed one field at a time (each value follows its int32 big-endian
length, -1 for NULL), and a column's values are gathered with one numpy fancy index through a
byte-strided view of the buffer (element ``k`` of the ``>i8`` view is bytes ``k..k+7``).

Strings and bytes become Arrow *view* arrays over the same buffer (length, 4-byte prefix, offset:
computed for all rows at once), which Arrow's own cast turns into ordinary string/binary arrays.
Framing is checked for every row (field count and the row's end), so a misread cannot go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from agent_etl.tools.databases.postgres.columns import PgColumn

PAD = 64  # zero bytes after the rows: gathers may read a few words past the last field
PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01
PG_EPOCH_US = 946_684_800_000_000
# 'infinity' / '-infinity' become what Python's date and datetime can still hold
MAX_DAY, MIN_DAY = 2_932_896, -719_162  # 9999-12-31, 0001-01-01
MAX_US, MIN_US = 253_402_300_799_999_999, -62_135_596_800_000_000
INT32_MAX, INT32_MIN = np.iinfo(np.int32).max, np.iinfo(np.int32).min
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
_KEEP8 = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # the low k bytes of a word
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLE_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)
WIDTH = {"bool": 1, "int2": 2, "int4": 4, "oid": 4, "float4": 4, "date": 4, "int8": 8, "float8": 8, "time": 8,
         "timestamp": 8, "uuid": 16}
_NUMERIC_SPECIAL = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}


class DecodeError(Exception):
    """A value that does not fit its Arrow type (the caller adds task and table to the message)."""

    def __init__(self, column: PgColumn, problem: str, fix: str):
        super().__init__(f"column {column.name!r} ({column.pg_type}) {problem}; {fix}")


class FramingError(Exception):
    """The bytes are not binary COPY rows of the expected shape."""


class RowBlock:
    """The bytes of ``len(lengths)`` consecutive binary COPY rows (without the file header)."""

    def __init__(self, data: bytearray, lengths: np.ndarray):
        data += bytes(PAD)
        self.buf = np.frombuffer(data, np.uint8)
        self.arrow = pa.py_buffer(data)
        self.ends = np.cumsum(lengths, dtype=np.int64)
        self.starts = self.ends - lengths
        self.n = len(lengths)
        self._views: dict[str, np.ndarray] = {}

    def view(self, dtype: str) -> np.ndarray:
        """Every byte offset of the buffer read as ``dtype`` (overlapping elements, stride 1)."""
        v = self._views.get(dtype)
        if v is None:
            dt = np.dtype(dtype)
            v = np.ndarray((len(self.buf) - dt.itemsize + 1,), dtype=dt, buffer=self.buf, strides=(1,))
            self._views[dtype] = v
        return v


def decode(block: RowBlock, columns: list[PgColumn], schema: pa.Schema) -> pa.RecordBatch:
    if block.n == 0:
        return empty(schema)
    if (block.view(">i2")[block.starts] != len(columns)).any():
        raise FramingError(f"a row does not have {len(columns)} fields")
    # a field's position is ``base + off``: a vector (where the last variable-width field ended)
    # plus a scalar (the NOT NULL fixed-width fields since), so those cost no gather at all
    base, off = block.starts, 2
    arrays = []
    for col in columns:
        if col.not_null:
            data, length, nulls = base + (off + 4), None, None
            off += 4 + WIDTH[col.kind]
        else:
            pos = base + off if off else base
            length = block.view(">i4")[pos]
            data = pos + 4
            nulls = length < 0
            if nulls.any():
                base, off = data + np.maximum(length, 0), 0
            else:
                nulls = None
                base, off = data + length, 0
        arrays.append(DECODERS[col.kind](block, data, length, nulls, col))
    if (base + off != block.ends).any():
        raise FramingError("a row's fields do not end where the row ends")
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def empty(schema: pa.Schema) -> pa.RecordBatch:
    """A 0-row batch of ``schema`` (built without pa.array, which would import pandas)."""
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _validity(nulls: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    if nulls is None:
        return None, 0
    return pa.py_buffer(np.packbits(~nulls, bitorder="little")), int(nulls.sum())


def _from_values(t: pa.DataType, values: np.ndarray, nulls: np.ndarray | None) -> pa.Array:
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(t, len(values), [validity, pa.py_buffer(values)], null_count)


def _from_wide(t: pa.DataType, values: np.ndarray, nulls: np.ndarray | None) -> pa.Array:
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(t, len(values) // 2, [validity, pa.py_buffer(values)], null_count)


def _fixed(big_endian: str, native: str) -> Callable[..., pa.Array]:
    def read(block: RowBlock, data: np.ndarray, length: np.ndarray, nulls: np.ndarray | None,
             col: PgColumn) -> pa.Array:
        return _from_values(col.type, block.view(big_endian)[data].astype(native), nulls)

    return read


def _bool(block, data, length, nulls, col) -> pa.Array:
    bits = np.packbits(block.buf[data] != 0, bitorder="little")
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(pa.bool_(), len(data), [validity, pa.py_buffer(bits)], null_count)


def _date(block, data, length, nulls, col) -> pa.Array:
    raw = block.view(">i4")[data].astype(np.int32)
    days = raw + np.int32(PG_EPOCH_DAYS)  # wraps for the infinities, fixed below
    days = _infinities(days, raw, INT32_MAX, INT32_MIN, MAX_DAY, MIN_DAY)
    return _from_values(col.type, days, nulls)


def _timestamp(block, data, length, nulls, col) -> pa.Array:
    raw = block.view(">i8")[data].astype(np.int64)
    us = raw + np.int64(PG_EPOCH_US)
    us = _infinities(us, raw, INT64_MAX, INT64_MIN, MAX_US, MIN_US)
    return _from_values(col.type, us, nulls)


def _infinities(values: np.ndarray, raw: np.ndarray, pos_inf: int, neg_inf: int, hi: int, lo: int) -> np.ndarray:
    top, bottom = raw == pos_inf, raw == neg_inf
    if top.any() or bottom.any():
        values = np.where(top, values.dtype.type(hi), np.where(bottom, values.dtype.type(lo), values))
    return values


def _views(block: RowBlock, data: np.ndarray, length: np.ndarray, nulls: np.ndarray | None,
           view_type: pa.DataType) -> pa.Array:
    """An Arrow string_view/binary_view array of the values at ``data`` (``length`` bytes each).

    A view is 16 bytes: the length, then either the value itself (up to 12 bytes, zero padded) or
    its first 4 bytes, the buffer index (0) and the offset of the value in the buffer."""
    n = len(data)
    ln = (np.maximum(length, 0) if nulls is not None else length).astype(np.uint64)
    views = np.empty((n, 2), np.uint64)
    head = block.view("<u4")[data].astype(np.uint64) & _KEEP8[np.minimum(ln, 4)]
    views[:, 0] = ln | (head << np.uint64(32))
    short = ln <= 12
    if short.any():
        inline = block.view("<u8")[data + 4] & _KEEP8[np.clip(ln, 4, 12) - 4]
        views[:, 1] = inline if short.all() else np.where(short, inline, data.astype(np.uint64) << np.uint64(32))
    else:
        views[:, 1] = data.astype(np.uint64) << np.uint64(32)
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(view_type, n, [validity, pa.py_buffer(views), block.arrow], null_count)


def _text(block, data, length, nulls, col) -> pa.Array:
    return _views(block, data, length, nulls, pa.string_view()).cast(pa.string())


def _jsonb(block, data, length, nulls, col) -> pa.Array:
    # a version byte (1) precedes the JSON text
    return _views(block, data + 1, np.where(length > 0, length - 1, length), nulls, pa.string_view()).cast(pa.string())


def _bytea(block, data, length, nulls, col) -> pa.Array:
    return _views(block, data, length, nulls, pa.binary_view()).cast(pa.binary())


def _uuid(block, data, length, nulls, col) -> pa.Array:
    n = len(data)
    halves = np.stack([block.view(">u8")[data], block.view(">u8")[data + 8]], axis=1).astype(np.uint64)
    nibbles = (halves[:, :, None] >> _NIBBLE_SHIFTS) & np.uint64(0xF)
    hexed = _HEX_DIGITS[nibbles.reshape(n, 32)]
    out = np.full((n, 36), ord("-"), np.uint8)
    for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
        out[:, dst:dst + width] = hexed[:, src:src + width]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(out)], null_count)


def _numeric(block, data, length, nulls, col) -> pa.Array:
    """numeric(p <= 18, s): base-10000 digits -> the unscaled int64 of decimal128(p, s)."""
    header = block.view(">u8")[data]  # ndigits, weight, sign, dscale: 16 bits each
    ndigits = (header >> np.uint64(48)).astype(np.int64)
    weight = ((header >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16).view(np.int16).astype(np.int64)
    sign = ((header >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16)
    if nulls is not None:
        ndigits[nulls] = 0
        sign[nulls] = 0
    special = (sign & 0xC000) == 0xC000
    if special.any():
        what = _NUMERIC_SPECIAL.get(int(sign[special][0]), "a special value")
        raise DecodeError(col, f"holds {what}, which a decimal cannot hold",
                          f"read it with NULLIF({col.name}, '{what}') or cast it to float8 in the query")
    most = int(ndigits.max(initial=0))
    unscaled = _four_digits(block, data, ndigits, weight, col.type.scale, most) if most <= 4 else \
        _digits(block, data, ndigits, weight, col.type.scale, most)
    unscaled[sign == 0x4000] *= -1
    wide = np.empty((len(data), 2), np.int64)
    wide[:, 0] = unscaled
    wide[:, 1] = unscaled >> 63  # two's complement sign extension to 128 bits
    return _from_wide(col.type, wide.reshape(-1), nulls)


def _four_digits(block: RowBlock, data: np.ndarray, ndigits: np.ndarray, weight: np.ndarray, scale: int,
                 most: int) -> np.ndarray:
    """Values of at most four base-10000 digits: read as one integer of ``most`` digits by Horner's
    rule (below 10^16), then scaled by one power of ten per row, exactly."""
    word = block.view(">u8")[data + 8]  # digits 0-3, 16 bits each, most significant first
    whole = np.zeros(len(data), np.int64)
    for j in range(most):
        whole *= 10_000
        whole += np.where(ndigits > j, (word >> np.uint64(48 - 16 * j)) & np.uint64(0xFFFF), 0).astype(np.int64)
    exp = 4 * (weight - (most - 1)) + scale  # whole x 10^exp is the unscaled value
    if (exp >= 0).all():
        return whole * _POW10[np.minimum(exp, 18)]
    if (exp <= 0).all():  # the digits past the scale are zeros: the division is exact
        return whole // _POW10[np.minimum(-exp, 18)]
    return np.where(exp >= 0, whole * _POW10[np.clip(exp, 0, 18)], whole // _POW10[np.clip(-exp, 0, 18)])


def _digits(block: RowBlock, data: np.ndarray, ndigits: np.ndarray, weight: np.ndarray, scale: int,
            most: int) -> np.ndarray:
    """Any number of digits, each scaled on its own (no intermediate beyond the unscaled value)."""
    unscaled = np.zeros(len(data), np.int64)
    top = 4 * weight + scale  # power of ten of digit 0 in the unscaled value
    for group in range((most + 3) // 4):
        word = block.view(">u8")[data + 8 + 8 * group]  # four digits at a time
        for k in range(4):
            j = 4 * group + k
            digit = ((word >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF)).astype(np.int64)
            digit[ndigits <= j] = 0
            exp = top - 4 * j  # -3..18: digits past the scale are whole multiples of 10^-exp
            unscaled += digit * _POW10[np.clip(exp, 0, 18)] // _POW10[np.clip(-exp, 0, 18)]
    return unscaled


def _array(block, data, length, nulls, col) -> pa.Array:
    """A one-dimensional array: ndim, has-null flag, element oid, then (size, lower bound) and the
    elements, each after its int32 length (-1 for NULL). Element ``j`` of every row is located in
    one vectorised step, longest arrays first; fixed-width elements without NULLs need no walk."""
    n, i4, item = len(data), block.view(">i4"), col.element
    ndim = i4[data] if nulls is None else np.where(nulls, 0, i4[data])
    if (ndim > 1).any():
        raise DecodeError(col, "holds a multi-dimensional array, which a list cannot hold",
                          f"read it as text with {col.name}::text in the query")
    one = ndim == 1
    sizes = np.where(one, i4[data + 12], 0).astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    first = data + 20
    width = WIDTH.get(item.kind)
    if width is not None and not (one & (i4[data + 4] != 0)).any():  # no NULL element: a fixed stride
        row = np.repeat(np.arange(n), sizes)
        pos = first[row] + (np.arange(int(offsets[-1])) - offsets[row]) * (4 + width)
        end = first + sizes * (4 + width)
    else:
        pos, end = np.empty(int(offsets[-1]), np.int64), first.copy()
        order = np.argsort(-sizes, kind="stable")
        longer = np.searchsorted(-sizes[order], -np.arange(int(sizes.max(initial=0))), side="left")
        for j, count in enumerate(longer):  # rows order[:count] have an element j
            rows = order[:count]
            at = end[rows]
            pos[offsets[rows] + j] = at
            end[rows] = at + 4 + np.maximum(i4[at], 0)
    if (one & (end != data + length)).any():
        raise FramingError(f"the elements of array column {col.name!r} do not end where the value ends")
    item_length = i4[pos]
    item_nulls = item_length < 0
    values = DECODERS[item.kind](block, pos + 4, item_length, item_nulls if item_nulls.any() else None, item)
    validity, null_count = _validity(nulls)
    return pa.Array.from_buffers(col.type, n, [validity, pa.py_buffer(offsets.astype(np.int32))], null_count,
                                 children=[values])


def _decimal_text(block, data, length, nulls, col) -> pa.Array:
    text = _text(block, data, length, nulls, col)
    try:
        return text.cast(col.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DecodeError(col, f"holds a value that is not a {col.type} ({e})",
                          f"read it with NULLIF({col.name}, 'NaN') or cast it to float8 or text in the query") from None


DECODERS: dict[str, Callable[..., pa.Array]] = {
    "bool": _bool,
    "int2": _fixed(">i2", "<i2"),
    "int4": _fixed(">i4", "<i4"),
    "int8": _fixed(">i8", "<i8"),
    "oid": _fixed(">u4", "<i8"),
    "float4": _fixed(">f4", "<f4"),
    "float8": _fixed(">f8", "<f8"),
    "time": _fixed(">i8", "<i8"),
    "date": _date,
    "timestamp": _timestamp,
    "text": _text,
    "jsonb": _jsonb,
    "bytea": _bytea,
    "uuid": _uuid,
    "numeric": _numeric,
    "decimal_text": _decimal_text,
    "array": _array,
}
