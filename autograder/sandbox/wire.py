"""The wire between the trusted grader and the sandboxed runner: framing and a by-value codec.

Everything crossing the wire is JSON. Plain data travels *by value*: None,
bools, numbers (anything Python calls a real number: int and float
subclasses, numpy scalars, fractions, sympy numbers arrive as int or float),
strings, lists, tuples and dicts (their subclasses too: a namedtuple arrives
as a tuple, an OrderedDict as a dict), numeric numpy arrays and torch tensors
(meta tensors as their shape), numpy and torch dtypes. Any other object stays
where it lives and travels as a reference ``{"__ref__": n}``. Nothing is ever
pickled, so neither side can make the other run code by sending it data.

Every read and write is bounded: a message has a size limit, a deadline
(a peer that trickles bytes cannot hold the reader past it), a nesting depth
and a budget of containers, strings and array bytes. This module is copied
into the sandbox, so it imports nothing but the standard library (numpy and
torch only when the objects themselves come from them).
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import socket
import struct
import sys
import time
from typing import Any, Callable

# Limits, also listed in boundary.py. The runner's messages are capped harder than the grader's own:
# the grader has to hold and decode what the runner sends.
MAX_MESSAGE = 64 * 1024 * 1024  # bytes of one grader -> runner message
MAX_REPLY = 16 * 1024 * 1024  # bytes of one runner -> grader message
MAX_CONTAINERS = 200_000  # lists and dicts in one message
MAX_STRINGS = 1_000_000  # strings in one message
MAX_DEPTH = 64  # nesting of containers
MAX_STRING = 200_000  # characters of one string sent by value
MAX_ITEMS = 2_000_000  # elements of one array sent by value
ARRAY_BUDGET = 12 * 1024 * 1024  # bytes of array data by value in one message; beyond it arrays go by reference
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """The other side broke the protocol (oversized, malformed, too deep or truncated message)."""


class WireTimeout(TimeoutError):
    """The other side did not complete a message before the deadline."""


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireTimeout("the deadline passed")
    return left


def send(sock: socket.socket, message: Any, deadline: float | None = None, limit: int = MAX_MESSAGE) -> None:
    """Send one message; raise WireTimeout if the peer does not take it before ``deadline`` (monotonic)."""
    data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if len(data) > limit:
        raise WireError(f"message of {len(data)} bytes is over the {limit} byte limit")
    payload = memoryview(_HEADER.pack(len(data)) + data)
    while payload:
        sock.settimeout(_remaining(deadline))
        try:
            sent = sock.send(payload)
        except socket.timeout:
            raise WireTimeout("the other side stopped reading") from None
        payload = payload[sent:]


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        sock.settimeout(_remaining(deadline))
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except socket.timeout:
            raise WireTimeout("the other side stopped in the middle of a message") from None
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, deadline: float | None = None, limit: int = MAX_MESSAGE) -> Any:
    """Read one whole message before ``deadline`` (monotonic seconds; None waits forever)."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if size > limit:
        raise WireError(f"message of {size} bytes is over the {limit} byte limit")
    raw = _recv_exact(sock, size, deadline)
    # Bound what decoding can cost before decoding: containers and strings are what blow up memory.
    if raw.count(b"[") + raw.count(b"{") > MAX_CONTAINERS:
        raise WireError(f"message holds more than {MAX_CONTAINERS} lists and dicts")
    if raw.count(b'"') > 2 * MAX_STRINGS + 2 * MAX_CONTAINERS:
        raise WireError(f"message holds more than {MAX_STRINGS} strings")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise WireError("malformed message: nested too deep") from None
    except ValueError as exc:
        raise WireError(f"malformed message: {str(exc)[:200]}") from None


# -- encoding -----------------------------------------------------------------------
_NUMERIC_KINDS = "biuf"
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict)


def _float(x: float) -> Any:
    if math.isfinite(x):
        return x
    return {"__f__": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


class _Budget:
    """Array bytes still allowed by value in the message being encoded."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _array(arr: Any, budget: _Budget) -> dict:
    if arr.dtype.kind not in _NUMERIC_KINDS or arr.dtype.itemsize > 16:
        raise TypeError(f"arrays of dtype {arr.dtype} do not travel by value")
    if arr.size > MAX_ITEMS:
        raise TypeError(f"an array of {arr.size} elements is over the limit")
    if arr.nbytes > budget.left:
        raise TypeError("the message's budget of array data is spent")
    import numpy as np

    arr = np.asarray(arr, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    budget.left -= arr.nbytes
    return {
        "__nd__": base64.b64encode(arr.tobytes()).decode("ascii"),
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
    }


def _tensor(obj: Any, torch: Any, budget: _Budget) -> dict:
    dtype = str(obj.dtype).replace("torch.", "")
    if obj.layout is not torch.strided or obj.is_complex() or obj.is_quantized:
        raise TypeError("only dense real tensors travel by value")
    if obj.device.type == "meta":
        return {"__tensor__": None, "shape": list(obj.shape), "torch_dtype": dtype,
                "requires_grad": bool(obj.requires_grad)}
    value = obj.detach()
    if value.dtype == torch.bfloat16 or value.dtype == torch.float16:
        value = value.float()
    return {"__tensor__": _array(value.cpu().numpy(), budget), "torch_dtype": dtype,
            "requires_grad": bool(obj.requires_grad)}


def encode(obj: Any, make_ref: Callable[[Any], Any], depth: int = 0, budget: _Budget | None = None,
           coerced: Callable[[Any], None] | None = None, live_parameters: bool = False) -> Any:
    """Encode ``obj`` by value where it is plain data; ``make_ref(obj)`` encodes anything else.

    ``coerced(obj)``, when given, sees every object that travels as the plain value of a type it is
    not (a float subclass, a namedtuple): the runner looks at those for tampering. With
    ``live_parameters``, a module's parameters (``torch.nn.Parameter``) travel as references, so
    that reading their ``.grad`` later reads the module's own (the runner's side).
    """
    if budget is None:
        budget = _Budget(ARRAY_BUDGET)
    if depth > MAX_DEPTH // 2:
        return make_ref(obj)
    t = type(obj)
    if coerced is not None and t not in _PLAIN and (
            isinstance(obj, (int, float, list, tuple, dict))
            or isinstance(obj, numbers.Number) and getattr(t, "__module__", "") != "numpy"):
        coerced(obj)
    if obj is None or t is bool or t is str:
        return obj if t is not str or len(obj) <= MAX_STRING else make_ref(obj)
    if t is int:
        return obj if -(2**63) <= obj < 2**63 else {"__bigint__": str(obj)}
    if t is float:
        return _float(obj)
    if isinstance(obj, (list, tuple)):  # subclasses too (namedtuple, torch.Size): as the plain container
        items = list.__iter__(obj) if isinstance(obj, list) else tuple.__iter__(obj)
        if len(obj) > MAX_ITEMS:
            return make_ref(obj)
        encoded = [encode(v, make_ref, depth + 1, budget, coerced, live_parameters) for v in items]
        return encoded if isinstance(obj, list) else {"__tuple__": encoded}
    if isinstance(obj, dict):  # OrderedDict, defaultdict, state dicts: as a plain dict, in order
        if len(obj) > MAX_ITEMS:
            return make_ref(obj)
        return {"__dict__": [[encode(k, make_ref, depth + 1, budget, coerced, live_parameters),
                              encode(v, make_ref, depth + 1, budget, coerced, live_parameters)] for k, v in dict.items(obj)]}
    module = getattr(t, "__module__", "") or ""
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            try:
                return _array(np.asarray(obj), budget)
            except TypeError:
                return make_ref(obj)
        if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC_KINDS:
            item = obj.item()
            return _float(item) if isinstance(item, float) else item
        if isinstance(obj, np.dtype) and obj.kind in _NUMERIC_KINDS:
            return {"__dtype__": obj.str}
        if isinstance(obj, type) and issubclass(obj, np.generic) and obj.__module__ == "numpy":
            return {"__nptype__": obj.__name__}
    torch = sys.modules.get("torch")
    if torch is not None and module.startswith("torch"):
        if isinstance(obj, torch.Tensor):
            if live_parameters and isinstance(obj, torch.nn.Parameter):
                return make_ref(obj)
            try:
                return _tensor(obj, torch, budget)
            except (TypeError, RuntimeError):
                return make_ref(obj)
        if isinstance(obj, torch.dtype):
            return {"__torchdtype__": str(obj).replace("torch.", "")}
        if isinstance(obj, torch.device):
            return {"__device__": str(obj)}
        if isinstance(obj, torch.Generator) and obj.device.type == "cpu":
            # By value (its state), so that torch's functions accept it on the other side: a copy, which the
            # callee may advance without advancing the caller's.
            return {"__torchgen__": _array(obj.get_state().numpy(), budget)}
    if isinstance(obj, numbers.Integral) and not isinstance(obj, bool):  # a sympy Integer, an int subclass
        try:
            return encode(int(obj), make_ref, depth + 1, budget, coerced, live_parameters)
        except Exception:  # noqa: BLE001 - a number that cannot say its value stays where it is
            return make_ref(obj)
    if isinstance(obj, numbers.Real):  # Fraction, Decimal-likes, float subclasses, sympy Float
        try:
            return _float(float(obj))
        except Exception:  # noqa: BLE001
            return make_ref(obj)
    return make_ref(obj)


def decode(data: Any, resolve_ref: Callable[[dict], Any], depth: int = 0) -> Any:
    """Inverse of :func:`encode`; ``resolve_ref`` turns a ``{"__ref__": ...}`` dict into an object."""
    if depth > MAX_DEPTH:
        raise WireError("data nested too deep")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, resolve_ref, depth + 1) for v in data]
    if not isinstance(data, dict):
        raise WireError(f"unexpected {type(data).__name__} on the wire")
    if "__tuple__" in data:
        items = data["__tuple__"]
        if not isinstance(items, list):
            raise WireError("malformed tuple")
        return tuple(decode(v, resolve_ref, depth + 1) for v in items)
    if "__dict__" in data:
        pairs = data["__dict__"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise WireError("malformed dict")
        return {_hashable(decode(k, resolve_ref, depth + 1)): decode(v, resolve_ref, depth + 1) for k, v in pairs}
    if "__f__" in data:
        if data["__f__"] not in ("nan", "inf", "-inf"):
            raise WireError("malformed float")
        return float(data["__f__"])
    if "__bigint__" in data:
        text = str(data["__bigint__"])
        if len(text) > 5000:
            raise WireError("integer too long")
        return int(text)
    if "__nd__" in data:
        return _decode_array(data)
    if "__tensor__" in data:
        return _decode_tensor(data)
    if "__dtype__" in data:
        import numpy as np

        dtype = np.dtype(str(data["__dtype__"]))
        if dtype.kind not in _NUMERIC_KINDS:
            raise WireError("dtype not allowed on the wire")
        return dtype
    if "__nptype__" in data:
        import numpy as np

        cls = getattr(np, str(data["__nptype__"]), None)
        if not (isinstance(cls, type) and issubclass(cls, np.generic)):
            raise WireError("unknown numpy type")
        return cls
    if "__torchdtype__" in data:
        import torch

        dtype = getattr(torch, str(data["__torchdtype__"]), None)
        if not isinstance(dtype, torch.dtype):
            raise WireError("unknown torch dtype")
        return dtype
    if "__torchgen__" in data:
        import torch

        state = _decode_array(data["__torchgen__"]) if isinstance(data["__torchgen__"], dict) else None
        if state is None or state.dtype.str != "|u1" or state.ndim != 1 or state.size > 100_000:
            raise WireError("malformed random generator")
        generator = torch.Generator()
        try:
            generator.set_state(torch.from_numpy(state.copy()))
        except (RuntimeError, ValueError):
            raise WireError("malformed random generator state") from None
        return generator
    if "__device__" in data:
        import torch

        try:
            return torch.device(str(data["__device__"])[:40])
        except (RuntimeError, ValueError):
            raise WireError("malformed device") from None
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

    try:
        dtype = np.dtype(str(data["dtype"]))
        shape = tuple(int(s) for s in data["shape"])
    except (TypeError, ValueError, KeyError):
        raise WireError("malformed array") from None
    if dtype.kind not in _NUMERIC_KINDS or any(s < 0 for s in shape) or len(shape) > 32:
        raise WireError(f"array dtype {dtype} or shape {shape} is not allowed on the wire")
    raw = base64.b64decode(str(data["__nd__"]))
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise WireError("array data does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _decode_tensor(data: dict) -> Any:
    import torch

    dtype = getattr(torch, str(data.get("torch_dtype", "")), None)
    if data["__tensor__"] is None:  # a meta tensor: shape and dtype only
        shape = data.get("shape")
        if not isinstance(shape, list) or len(shape) > 32 or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise WireError("malformed meta tensor")
        tensor = torch.empty(shape, dtype=dtype if isinstance(dtype, torch.dtype) else None, device="meta")
    else:
        tensor = torch.from_numpy(_decode_array(data["__tensor__"]))
        if isinstance(dtype, torch.dtype) and dtype != tensor.dtype:
            tensor = tensor.to(dtype)
    if data.get("requires_grad") and (tensor.is_floating_point()):
        tensor.requires_grad_(True)
    return tensor
