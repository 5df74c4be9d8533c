"""Keys and values of a map as bytes, a ``struct`` format, or a numpy dtype.

A map stores fixed-size byte strings, as the kernel's do.  A codec given at
create turns Python objects into those bytes and back:

- ``None``: bytes in, bytes out (any bytes-like object of the exact size);
- a ``struct`` format such as ``"<Q"`` or ``"<IHH"``: one field reads and
  writes a scalar, several a tuple;
- a numpy dtype (``np.uint64``, ``np.dtype([("pkts", "<u8"), ("bytes", "<u8")])``):
  reads return a numpy scalar or a structured record (a copy), writes accept
  anything ``np.asarray(x, dtype)`` accepts.

``spec()`` gives a string that :func:`from_spec` turns back into the same
codec, so that another process attaching the map by name decodes alike.
"""

from __future__ import annotations

import ast
import struct
from typing import Any

from percpu.errors import InvalidArgument

__all__ = ["Codec", "from_spec", "make"]


class Codec:
    """Bytes <-> objects for one key or value size (see the module docstring)."""

    kind = "bytes"

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, obj: Any) -> bytes | memoryview:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            mv = memoryview(obj).cast("B") if not isinstance(obj, bytes) else obj
            if len(mv) != self.size:
                raise InvalidArgument(f"expected {self.size} bytes, got {len(mv)}")
            return mv
        if isinstance(obj, int) and not isinstance(obj, bool) and self.size in (1, 2, 4, 8):
            try:
                return obj.to_bytes(self.size, "little", signed=obj < 0)
            except OverflowError:
                raise InvalidArgument(f"{obj} does not fit in {self.size} bytes") from None
        raise InvalidArgument(f"expected {self.size} bytes (this map has no key/value format), got {obj!r}")

    def decode(self, raw: bytes) -> Any:
        return raw

    def spec(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.size} B>"


class StructCodec(Codec):
    kind = "struct"

    def __init__(self, fmt: str) -> None:
        try:
            self.st = struct.Struct(fmt)
        except struct.error as e:
            raise InvalidArgument(f"bad struct format {fmt!r}: {e}") from None
        super().__init__(self.st.size)
        self.fmt = fmt
        self.single = len(self.st.unpack(bytes(self.st.size))) == 1

    def encode(self, obj: Any) -> bytes | memoryview:
        if self.single and type(obj) is int:
            try:
                return self.st.pack(obj)
            except struct.error:
                pass  # the message below
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return super().encode(obj)
        try:
            if self.single and not isinstance(obj, tuple):
                return self.st.pack(obj)
            return self.st.pack(*obj)
        except (struct.error, TypeError) as e:
            raise InvalidArgument(f"{obj!r} does not pack as {self.fmt!r}: {e}") from None

    def decode(self, raw: bytes) -> Any:
        v = self.st.unpack(raw)
        return v[0] if self.single else v

    def spec(self) -> str:
        return "struct:" + self.fmt


class NumpyCodec(Codec):
    kind = "numpy"

    def __init__(self, dtype: Any) -> None:
        import numpy as np

        try:
            self.dtype = np.dtype(dtype)
        except TypeError as e:
            raise InvalidArgument(f"bad numpy dtype {dtype!r}: {e}") from None
        if self.dtype.hasobject:
            raise InvalidArgument("a numpy dtype with Python objects cannot live in shared memory")
        super().__init__(self.dtype.itemsize)
        self._np = np

    def encode(self, obj: Any) -> bytes | memoryview:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return super().encode(obj)
        try:
            return self._np.asarray(obj, dtype=self.dtype).tobytes()
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"{obj!r} is not a {self.dtype}: {e}") from None

    def decode(self, raw: bytes) -> Any:
        return self._np.frombuffer(raw, dtype=self.dtype)[0].copy()

    def spec(self) -> str:
        d = self.dtype
        return "numpy:" + (repr(d.descr) if d.names else d.str)


def make(obj: Any, size: int | None, what: str) -> Codec:
    """A codec from a spec given at create: None, a struct format, a numpy dtype, or a Codec."""
    if isinstance(obj, Codec):
        c = obj
    elif obj is None:
        if size is None:
            raise InvalidArgument(f"{what}_size is needed when there is no {what} format")
        c = Codec(size)
    elif isinstance(obj, str):
        c = StructCodec(obj)
    else:
        c = NumpyCodec(obj)
    if size is not None and c.size != size:
        raise InvalidArgument(f"the {what} format is {c.size} bytes, but {what}_size is {size}")
    return c


def from_spec(spec: str, size: int) -> Codec:
    """The codec :meth:`Codec.spec` described."""
    if not spec:
        return Codec(size)
    kind, _, rest = spec.partition(":")
    c: Codec
    if kind == "struct":
        c = StructCodec(rest)
    elif kind == "numpy":
        c = NumpyCodec(ast.literal_eval(rest) if rest.startswith("[") else rest)
    else:
        raise InvalidArgument(f"unknown codec spec {spec!r}")
    if c.size != size:
        raise InvalidArgument(f"codec spec {spec!r} is {c.size} bytes, not {size}")
    return c
