"""Checks that explain themselves.

Every graded test cell calls these helpers instead of bare ``assert``. A
failing check raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader
counts the cell as failed) whose message says *what* is wrong, *by how much*,
and gives a hint that names the usual mistake. Passing checks print one short
line to stdout; nothing is ever written to stderr (nbgrader scores a test cell
that writes to stderr as 0).

IPython hides frames that set ``__tracebackhide__``, so a student sees the
message and the line of the test cell, not the inside of this module.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "CheckFailed",
    "as_array",
    "as_number",
    "call",
    "expect_array_close",
    "expect_close",
    "expect_true",
    "passed",
    "unpack",
]


class CheckFailed(AssertionError):
    """A graded check failed; the message is written for the student."""


def _fail(message: str) -> None:
    __tracebackhide__ = True
    raise CheckFailed(message) from None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def as_number(value: Any, name: str) -> float:
    """Return ``value`` as a Python float, or fail with a message saying what ``name`` holds instead.

    Accepts Python and numpy numbers and 0-d (or one-element) numpy arrays and
    torch tensors. Rejects ``None``, ``...``, strings, and booleans.
    """
    __tracebackhide__ = True
    if value is None or value is Ellipsis:
        _fail(f"{name} is {value!r}: fill in the blank with a number.")
    if isinstance(value, bool):
        _fail(f"{name} is the boolean {value}: it should be a number.")
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    size = getattr(value, "size", None)
    if size == 1 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return float(item)
    kind = type(value).__name__
    if hasattr(value, "data") and isinstance(getattr(value, "data"), numbers.Real):
        _fail(f"{name} is a {kind} node, not a number: use its .data (or .grad) attribute.")
    _fail(f"{name} should be a single number, but it is a {kind}: {value!r:.80}")
    raise AssertionError  # unreachable


def expect_close(
    actual: Any,
    expected: float,
    name: str,
    *,
    hint: str = "",
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> None:
    """Fail unless ``actual`` is a number within ``atol + rtol * |expected|`` of ``expected``.

    The message gives both values, the absolute error, and ``hint``.
    """
    __tracebackhide__ = True
    value = as_number(actual, name)
    expected = float(expected)
    if math.isnan(value):
        _fail(f"{name} is nan (expected {_fmt(expected)}). {hint}".strip())
    error = abs(value - expected)
    if not error <= atol + rtol * abs(expected):
        _fail(
            f"{name} is wrong: expected {_fmt(expected)}, got {_fmt(value)} "
            f"(off by {error:.3g}). {hint}".strip()
        )


def expect_true(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    __tracebackhide__ = True
    if not condition:
        _fail(message)


def call(function: Any, *args: Any, name: str | None = None) -> Any:
    """Call a student's function and turn the usual early mistakes into clear messages.

    ``NotImplementedError`` (the release's placeholder) becomes "not implemented
    yet"; a missing or non-callable object says so; any other exception is
    reported with its type and message so the student sees where to look.
    """
    __tracebackhide__ = True
    label = name or getattr(function, "__name__", "your function")
    if not callable(function):
        _fail(f"{label} should be a function, but it is {type(function).__name__}.")
    try:
        return function(*args)
    except NotImplementedError:
        _fail(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except RecursionError:
        _fail(
            f"{label} hit Python's recursion limit. Deep graphs need an explicit stack "
            "(a list you push to and pop from) instead of a recursive call per node."
        )
    except Exception as exc:  # noqa: BLE001 - reported to the student in words
        _fail(f"{label} raised {type(exc).__name__}: {exc}")


def passed(message: str) -> None:
    """Print one line saying what just passed (to stdout, never stderr)."""
    print(f"\u2713 {message}")



def unpack(result: Any, names: tuple[str, ...], what: str) -> tuple[float, ...]:
    """Check that ``result`` is a tuple of ``len(names)`` numbers and return them as floats."""
    __tracebackhide__ = True
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        _fail(
            f"{what} should return {len(names)} numbers, ({', '.join(names)}), "
            f"but returned {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            + "."
        )
    return tuple(as_number(v, n) for v, n in zip(result, names))


def as_array(value: Any, name: str) -> "np.ndarray":
    """Return ``value`` as a float numpy array, or fail saying what ``name`` holds instead."""
    __tracebackhide__ = True
    import numpy as np

    if value is None or value is Ellipsis:
        _fail(f"{name} is {value!r}: fill in the blank with an array.")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        _fail(f"{name} should be an array of numbers, but it is a {type(value).__name__}: {value!r:.80}")
    return arr


def expect_array_close(
    actual: Any,
    expected: Any,
    name: str,
    *,
    hint: str = "",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    batch_size: int | None = None,
) -> None:
    """Fail unless ``actual`` has ``expected``'s shape and values; name the usual mistakes when it does not.

    Recognised: a transposed result, a flipped sign, and (given ``batch_size``)
    a result averaged over the batch where it should be summed, or the reverse.
    The message gives the largest error and where it is.
    """
    __tracebackhide__ = True
    import numpy as np

    got = as_array(actual, name)
    want = np.asarray(expected, dtype=float)
    if got.shape != want.shape:
        if got.ndim == 2 and got.shape == want.T.shape:
            _fail(f"{name} has shape {got.shape} but should have shape {want.shape}: it looks transposed. {hint}".strip())
        _fail(f"{name} has shape {got.shape} but should have shape {want.shape}. {hint}".strip())
    if np.allclose(got, want, rtol=rtol, atol=atol) and not np.isnan(got).any():
        return
    if np.isnan(got).any() or np.isinf(got).any():
        _fail(f"{name} contains nan or inf: look for an overflow (exp of a large number) or a division by zero. {hint}".strip())
    diagnosis = ""
    close = lambda a, b: np.allclose(a, b, rtol=max(rtol, 1e-6), atol=max(atol, 1e-9))  # noqa: E731
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got, want.T):
        diagnosis = " It equals the transpose of the right answer."
    elif close(got, -want):
        diagnosis = " It has the right size but the wrong sign."
    elif batch_size and batch_size > 1 and close(got * batch_size, want):
        diagnosis = (f" It is {batch_size} times too small (the batch size): you averaged over the batch "
                     "where the gradient sums over it.")
    elif batch_size and batch_size > 1 and close(got, want * batch_size):
        diagnosis = (f" It is {batch_size} times too large (the batch size): you summed over the batch "
                     "where it should be averaged.")
    error = np.abs(got - want)
    worst = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
    where = f" at index {tuple(int(i) for i in worst)}" if worst else ""
    _fail(
        f"{name} is wrong: the largest error is {float(error.max()):.3g}{where} "
        f"(expected {float(want[worst]):.6g}, got {float(got[worst]):.6g}).{diagnosis} {hint}".strip()
    )
