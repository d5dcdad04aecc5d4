"""The wire between the trusted grader and the sandboxed runner: framing and a by-value codec.

Everything crossing the wire is JSON. Plain data (None, bools, numbers,
strings, lists, tuples, dicts, numeric numpy arrays, torch tensors) travels
*by value*; any other object stays where it lives and travels as a reference
``{"__ref__": n}``. Nothing is ever pickled, so neither side can make the
other run code by sending it data. This module is copied into the sandbox,
so it imports nothing but the standard library (numpy and torch only when the
objects themselves come from them).
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import sys
from typing import Any, Callable

MAX_MESSAGE = 256 * 1024 * 1024
MAX_STRING = 200_000
MAX_ITEMS = 2_000_000
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """The other side broke the protocol (oversized, malformed or truncated message)."""


def send(sock: socket.socket, message: Any) -> None:
    data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE} byte limit")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes is over the {MAX_MESSAGE} byte limit")
    try:
        return json.loads(_recv_exact(sock, size).decode("utf-8"))
    except ValueError as exc:
        raise WireError(f"malformed message: {exc}") from None


# -- encoding -----------------------------------------------------------------------
_NUMERIC_KINDS = "biuf"


def _float(x: float) -> Any:
    if math.isfinite(x):
        return x
    return {"__f__": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _array(arr: Any) -> dict:
    if arr.dtype.kind not in _NUMERIC_KINDS or arr.dtype.itemsize > 16:
        raise TypeError(f"arrays of dtype {arr.dtype} do not travel by value")
    if arr.size > MAX_ITEMS:
        raise TypeError(f"an array of {arr.size} elements is over the limit")
    import numpy as np

    arr = np.ascontiguousarray(arr)
    return {
        "__nd__": base64.b64encode(arr.tobytes()).decode("ascii"),
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
    }


def encode(obj: Any, make_ref: Callable[[Any], Any], depth: int = 0) -> Any:
    """Encode ``obj`` by value where it is plain data; ``make_ref(obj)`` encodes anything else."""
    if depth > 50:
        return make_ref(obj)
    t = type(obj)
    if obj is None or t is bool or t is str and len(obj) <= MAX_STRING:
        return obj
    if t is int:
        return obj if -(2**63) <= obj < 2**63 else {"__bigint__": str(obj)}
    if t is float:
        return _float(obj)
    if t is list or t is tuple:
        if len(obj) > MAX_ITEMS:
            return make_ref(obj)
        items = [encode(v, make_ref, depth + 1) for v in obj]
        return items if t is list else {"__tuple__": items}
    if t is dict and len(obj) <= MAX_ITEMS:
        return {"__dict__": [[encode(k, make_ref, depth + 1), encode(v, make_ref, depth + 1)] for k, v in obj.items()]}
    module = getattr(t, "__module__", "") or ""
    if module == "numpy" and "numpy" in sys.modules:
        np = sys.modules["numpy"]
        if t is np.ndarray:
            try:
                return _array(obj)
            except TypeError:
                return make_ref(obj)
        if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC_KINDS:
            item = obj.item()
            return _float(item) if isinstance(item, float) else item
    if module.startswith("torch") and "torch" in sys.modules and isinstance(obj, sys.modules["torch"].Tensor):
        try:
            return {"__tensor__": _array(obj.detach().cpu().numpy()), "requires_grad": bool(obj.requires_grad)}
        except (TypeError, RuntimeError):
            return make_ref(obj)
    return make_ref(obj)


def decode(data: Any, resolve_ref: Callable[[dict], Any]) -> Any:
    """Inverse of :func:`encode`; ``resolve_ref`` turns a ``{"__ref__": ...}`` dict into an object."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, resolve_ref) for v in data]
    if not isinstance(data, dict):
        raise WireError(f"unexpected {type(data).__name__} on the wire")
    if "__tuple__" in data:
        return tuple(decode(v, resolve_ref) for v in data["__tuple__"])
    if "__dict__" in data:
        return {_hashable(decode(k, resolve_ref)): decode(v, resolve_ref) for k, v in data["__dict__"]}
    if "__f__" in data:
        return float(data["__f__"])
    if "__bigint__" in data:
        return int(data["__bigint__"])
    if "__nd__" in data:
        return _decode_array(data)
    if "__tensor__" in data:
        import torch

        tensor = torch.from_numpy(_decode_array(data["__tensor__"]).copy())
        return tensor.requires_grad_(bool(data.get("requires_grad"))) if tensor.is_floating_point() else tensor
    if "__ref__" in data or "__callback__" in data:
        return resolve_ref(data)
    raise WireError("unknown tag on the wire")


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise WireError("unhashable dict key on the wire") from None
    return key


def _decode_array(data: dict) -> Any:
    import numpy as np

    dtype = np.dtype(str(data["dtype"]))
    if dtype.kind not in _NUMERIC_KINDS:
        raise WireError(f"array dtype {dtype} is not allowed on the wire")
    shape = tuple(int(s) for s in data["shape"])
    raw = base64.b64decode(data["__nd__"])
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise WireError("array data does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
