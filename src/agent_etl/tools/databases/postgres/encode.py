"""Arrow record batches -> PostgreSQL binary COPY rows, vectorised (numpy and Arrow kernels only).

A binary COPY row is a 16-bit field count, then per field a 32-bit length (-1 for NULL) and the
value in PostgreSQL's binary ("send") format, all big-endian. Fields that always have the same
size (integers, floats, bool, date, timestamp, time, uuid, and numeric: written with a fixed
number of base-10000 digits per column) are laid out as one (rows x bytes) numpy matrix, filled
column by column with strided byte-swapping copies. Variable-size fields (text, bytea, json,
arrays, and fixed-size fields of a batch that holds NULLs) stay Arrow binary arrays. The row bytes
are then concatenated, row by row, by Arrow's ``binary_join_element_wise`` kernel, whose output
buffer is exactly the COPY data. So there is no per-row Python and no extension of our own.

Putting the fixed-size columns first in the COPY column list (``order``) keeps the number of
arguments to that join small: one matrix for all of them plus two per variable-size column.
Timestamps and times are truncated to microseconds (PostgreSQL's resolution); timestamps with a
time zone are written as the instant they stand for.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.tools.databases.postgres.load_types import ARRAY_ELEMENTS, TEXT_LIKE

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01
PG_EPOCH_US = 946_684_800_000_000
FIXED = {"int2": ("int16", ">i2"), "int4": ("int32", ">i4"), "int8": ("int64", ">i8"),
         "float4": ("float32", ">f4"), "float8": ("float64", ">f8"), "bool": None, "date": None,
         "timestamp": None, "timestamptz": None, "time": None, "uuid": None, "numeric": None}
OIDS = {"bool": 16, "int2": 21, "int4": 23, "int8": 20, "float4": 700, "float8": 701, "text": 25, "varchar": 1043}


class EncodeError(ValueError):
    def __init__(self, column: str, problem: str):
        super().__init__(f"column {column!r}: {problem}")
        self.column = column


def order(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The COPY column order that makes encoding cheapest: fixed-size kinds first."""
    return sorted(columns, key=lambda c: c[1] not in FIXED)


class Encoder:
    """Encodes batches whose columns are ``columns`` [(name, kind)], in that order."""

    def __init__(self, columns: list[tuple[str, str]]):
        self.columns = columns
        self._json = None  # a DuckDB connection, made when a struct/map/list goes into json

    def encode(self, batch: pa.RecordBatch) -> memoryview:
        n = batch.num_rows
        parts: list[bytes | np.ndarray | pa.Array] = [len(self.columns).to_bytes(2, "big")]
        for name, kind in self.columns:
            try:
                parts.extend(self.field(batch.column(name), kind))
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
                raise EncodeError(name, str(e).splitlines()[0]) from e
        return _join(parts, n)

    def field(self, arr: pa.Array, kind: str) -> list[bytes | np.ndarray | pa.Array]:
        """A column's fields: [constant length, value matrix] when every value has the same
        size, else [length matrix, binary payload whose NULLs are left out]."""
        arr = self.prepare(arr, kind)
        if kind not in FIXED:
            data = self._payload(arr, kind)
            return [_lengths(pc.binary_length(data).fill_null(-1).to_numpy()), data]
        values = _values(arr, kind)
        n, width = values.shape
        if arr.null_count == 0:
            return [width.to_bytes(4, "big"), values]
        offsets = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int32))
        valid = pc.is_valid(arr)
        data = pa.Array.from_buffers(pa.binary(), n, [valid.buffers()[1], offsets, pa.py_buffer(values)])
        return [_lengths(np.where(valid.to_numpy(zero_copy_only=False), width, -1)), data]

    def prepare(self, arr: pa.Array, kind: str) -> pa.Array:
        """``arr`` as the one Arrow type the encoder writes ``kind`` from (casts are checked)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        ext = getattr(arr.type, "extension_name", None)
        if isinstance(arr, pa.ExtensionArray) and ext not in ("arrow.uuid", "arrow.json"):
            arr = arr.storage
        t = arr.type
        if FIXED.get(kind):
            return arr.cast(FIXED[kind][0])
        if kind == "bool":
            return arr.cast(pa.bool_())
        if kind == "date":
            return arr.cast(pa.date32())
        if kind in ("timestamp", "timestamptz"):
            return arr.cast(pa.timestamp("us", "UTC" if kind == "timestamptz" else None), safe=t.unit != "ns")
        if kind == "time":
            return arr.cast(pa.time64("us"), safe=getattr(t, "unit", "") != "ns")
        if kind == "uuid":
            return (arr.storage if ext else arr).cast(pa.binary(16))
        if kind == "numeric":
            if pa.types.is_integer(t):
                return arr.cast(pa.decimal128(20, 0) if t == pa.uint64() else pa.decimal128(19, 0))
            return arr
        if kind in TEXT_LIKE or kind in ("json", "jsonb", "bytea"):
            if ext:
                arr = arr.storage
            if pa.types.is_struct(arr.type) or pa.types.is_map(arr.type) or pa.types.is_list(arr.type) \
                    or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
                arr = self._to_json(arr)
            return arr.cast(pa.binary())
        if kind in ARRAY_ELEMENTS:
            if not pa.types.is_list(t):
                arr = arr.cast(pa.list_(t.value_type))
            return arr
        raise TypeError(f"no binary encoding for PostgreSQL type {kind}")

    def _payload(self, arr: pa.Array, kind: str) -> pa.Array:
        if kind == "jsonb":  # jsonb's binary format is a version byte, then the JSON text
            return pc.binary_join_element_wise(pa.scalar(b"\x01"), arr, b"", null_handling="emit_null")
        if kind in ARRAY_ELEMENTS:
            return self._array(arr, ARRAY_ELEMENTS[kind])
        return arr

    def _array(self, arr: pa.ListArray, elem_kind: str) -> pa.Array:
        """1-D arrays: ndim, has-NULL flag, element type, size and lower bound, then the elements
        as fields; an empty list is an array of no dimensions."""
        n = len(arr)
        elems = arr.flatten()
        sizes = pc.list_value_length(arr).fill_null(0).to_numpy().astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        fields = _join(self.field(elems, elem_kind), len(elems), array=True)
        nulls = np.zeros(len(elems) + 1, dtype=np.int64)
        np.cumsum(pc.is_null(elems).to_numpy(zero_copy_only=False), out=nulls[1:])
        has_null = (nulls[offsets[1:]] - nulls[offsets[:-1]]) > 0
        head = np.empty((n, 5), dtype=">i4")
        head[:, 0], head[:, 1], head[:, 2], head[:, 3], head[:, 4] = 1, has_null, OIDS[elem_kind], sizes, 1
        full = _as_binary(head.view(np.uint8).reshape(n, 20))
        head = pc.if_else(pa.array(sizes > 0), full, pa.scalar(np.array([0, 0, OIDS[elem_kind]], ">i4").tobytes()))
        lists = pa.ListArray.from_arrays(pa.array(offsets), fields, mask=pc.is_null(arr))
        return pc.binary_join_element_wise(head, pc.binary_join(lists, b""), b"", null_handling="emit_null")

    def _to_json(self, arr: pa.Array) -> pa.Array:
        """Structs, maps and lists as JSON text, by DuckDB's to_json (vectorised, order kept)."""
        import duckdb

        if self._json is None:
            self._json = duckdb.connect()
        rel = self._json.from_arrow(pa.table({"v": arr})).project("to_json(v)::VARCHAR")
        out = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
        return out.column(0).combine_chunks()


def _values(arr: pa.Array, kind: str) -> np.ndarray:
    """Big-endian bytes of a fixed-size kind, one row per value (NULL slots hold anything)."""
    n, off = len(arr), arr.offset
    if kind == "bool":
        return arr.cast(pa.uint8()).fill_null(0).to_numpy().astype(np.uint8).reshape(n, 1)
    if kind == "uuid":
        return np.frombuffer(arr.buffers()[1], np.uint8, count=16 * (n + off))[16 * off:].reshape(n, 16)
    if kind == "numeric":
        return _numeric(arr)
    if kind == "date":
        raw, big, shift = "int32", ">i4", PG_EPOCH_DAYS
    elif kind in ("timestamp", "timestamptz"):
        raw, big, shift = "int64", ">i8", PG_EPOCH_US
    elif kind == "time":
        raw, big, shift = "int64", ">i8", 0
    else:
        (raw, big), shift = FIXED[kind], 0
    values = np.frombuffer(arr.buffers()[1], raw, count=n + off)[off:]
    out = np.empty(n, big)
    if shift:
        np.subtract(values, shift, out=out, casting="unsafe")
    else:
        out[:] = values
    return out.view(np.uint8).reshape(n, out.dtype.itemsize * (out.shape[1] if out.ndim == 2 else 1))


def _numeric(arr: pa.Array) -> np.ndarray:
    """numeric's send format: ndigits, weight, sign, dscale, then base-10000 digits, most significant
    first. Every row gets the digits that precision p and scale s can need; PostgreSQL strips the
    zero ones on receipt. The last digit holds the last 4 decimals of the fraction."""
    t, n, off = arr.type, len(arr), arr.offset
    p, s = t.precision, t.scale
    frac = -(-s // 4)
    k = max(1, -(-(p - s) // 4) + frac)
    words = np.frombuffer(arr.buffers()[1], "<u8", count=2 * (n + off))[2 * off:].reshape(n, 2)
    lo, hi = words[:, 0].copy(), words[:, 1].copy()
    negative = hi.view(np.int64) < 0
    out = np.empty((n, 4 + k), dtype=">i2")
    out[:, 0], out[:, 1], out[:, 3] = k, k - frac - 1, s
    out[:, 2] = np.where(negative, 0x4000, 0)
    if p <= 18:  # the value fits in the low word
        mag = np.abs(lo.view(np.int64))

        def divmod_(d: int) -> np.ndarray:
            nonlocal mag
            mag, r = np.divmod(mag, d)
            return r
    else:  # 128-bit magnitude as four 32-bit limbs in uint64 lanes, divided limb by limb
        lo_neg = ~lo + np.uint64(1)
        hi = np.where(negative, ~hi + (lo_neg == 0).astype(np.uint64), hi)
        lo = np.where(negative, lo_neg, lo)
        mask = np.uint64(0xFFFFFFFF)
        limbs = [hi >> np.uint64(32), hi & mask, lo >> np.uint64(32), lo & mask]

        def divmod_(d: int) -> np.ndarray:
            r = np.zeros(n, np.uint64)
            for i, limb in enumerate(limbs):
                cur = (r << np.uint64(32)) | limb
                limbs[i] = cur // np.uint64(d)
                r = cur - limbs[i] * np.uint64(d)
            return r
    digit = 3 + k  # column of the least significant digit
    if s % 4:
        out[:, digit] = divmod_(10 ** (s % 4)) * 10 ** (4 - s % 4)
        digit -= 1
    while digit >= 4:
        out[:, digit] = divmod_(10_000)
        digit -= 1
    return out.view(np.uint8).reshape(n, out.dtype.itemsize * (out.shape[1] if out.ndim == 2 else 1))


def _lengths(values: np.ndarray) -> np.ndarray:
    return values.astype(">i4").view(np.uint8).reshape(-1, 4)


def _as_binary(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))])


def _join(parts: list[bytes | np.ndarray | pa.Array], n: int, array: bool = False) -> memoryview | pa.Array:
    """Concatenate the parts row by row: runs of constants and matrices become one matrix (the
    constants broadcast as one template row, each matrix one strided copy), and Arrow joins those
    with the binary payloads, whose NULLs contribute no bytes (their length already says -1)."""
    merged: list[np.ndarray | pa.Array] = []
    run: list[bytes | np.ndarray] = []
    for part in [*parts, None]:
        if isinstance(part, (bytes, np.ndarray)):
            run.append(part)
            continue
        if run:
            merged.append(_matrix(run, n))
            run = []
        if part is not None:
            merged.append(part)
    if len(merged) == 1 and isinstance(merged[0], np.ndarray):
        return _as_binary(merged[0]) if array else memoryview(merged[0].reshape(-1))
    args = [_as_binary(p) if isinstance(p, np.ndarray) else p for p in merged]
    if len(args) == 1:
        args.append(pa.scalar(b""))
    rows = pc.binary_join_element_wise(*args, b"", null_handling="replace", null_replacement="")
    if array:
        return rows
    end = int(np.frombuffer(rows.buffers()[1], np.int32, count=n + 1)[n])
    return memoryview(rows.buffers()[2])[:end]


def _matrix(run: list[bytes | np.ndarray], n: int) -> np.ndarray:
    widths = [len(p) if isinstance(p, bytes) else p.shape[1] for p in run]
    out = np.empty((n, sum(widths)), dtype=np.uint8)
    if any(isinstance(p, bytes) for p in run):
        out[:] = np.frombuffer(b"".join(p if isinstance(p, bytes) else bytes(w) for p, w in zip(run, widths)),
                               np.uint8)
    at = 0
    for part, width in zip(run, widths):
        if isinstance(part, np.ndarray):  # as opaque items of the part's width: one copy per row
            cell = np.dtype(f"V{width}")
            out[:, at:at + width].view(cell)[:, 0] = np.ascontiguousarray(part).view(cell)[:, 0]
        at += width
    return out
