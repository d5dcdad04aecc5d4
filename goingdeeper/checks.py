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

import contextlib
import math
import numbers
from typing import Any, Callable, Iterator, Sequence

__all__ = [
    "CheckFailed",
    "as_array",
    "as_number",
    "beside",
    "call",
    "expect_array_close",
    "expect_close",
    "expect_true",
    "is_a",
    "passed",
    "read_path",
    "student_line",
    "unpack",
]


class CheckFailed(AssertionError):
    """A graded check failed; the message is written for the student."""


def _fail(message: str) -> None:
    __tracebackhide__ = True
    raise CheckFailed(message) from None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Two numbers with as many digits as it takes to show that they differ (6 at least, 17 at most)."""
    for digits in range(6, 18):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            return sa, sb
    return sa, sb


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
    reveal: bool = True,
) -> None:
    """Fail unless ``actual`` is a number within ``atol + rtol * |expected|`` of ``expected``.

    The message gives both values, the absolute error, and ``hint``. With ``reveal=False`` it does not
    print the expected value (for a blank whose number is the exercise): it says what was got, and the hint.
    """
    __tracebackhide__ = True
    value = as_number(actual, name)
    expected = float(expected)
    if math.isnan(value):
        _fail(f"{name} is nan" + (f" (expected {_fmt(expected)})" if reveal else "") + f". {hint}".rstrip())
    error = abs(value - expected)
    if not error <= atol + rtol * abs(expected):
        if expected != 0 and abs(value + expected) <= atol + rtol * abs(expected):
            hint = f"It has the right size but the wrong sign. {hint}".strip()
        if not reveal:
            _fail(f"{name} is wrong: you have {_fmt(value)}. {hint}".strip())
        want, got = _fmt_pair(expected, value)
        _fail(f"{name} is wrong: expected {want}, got {got} (off by {error:.3g}). {hint}".strip())


def expect_true(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    __tracebackhide__ = True
    if not condition:
        _fail(message)


_QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _copied(value: Any, depth: int = 0) -> Any:
    """``value`` with its numpy arrays and torch tensors copied (inside lists, tuples and dicts too)."""
    if depth > 4:
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "copy") and hasattr(value, "shape"):
        return value.copy()
    if type(value).__module__.startswith("torch") and hasattr(value, "clone"):  # a tensor: the copy keeps its graph
        return value.clone()
    if type(value) in (list, tuple):
        return type(value)(_copied(v, depth + 1) for v in value)
    if type(value) is dict:
        return {k: _copied(v, depth + 1) for k, v in value.items()}
    return value


def student_line(exc: BaseException) -> str:
    """The line of the student's own notebook code where ``exc`` was raised ('' when not known).

    Cells run by Jupyter compile to files named like ``/tmp/ipykernel_NNN/NNN.py`` (or
    ``<ipython-input-...>``); the grading command's sandbox reports the line itself.
    """
    import linecache

    where = getattr(exc, "student_line", "")
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if "/ipykernel_" in code.co_filename or code.co_filename.startswith("<ipython-input-"):
            text = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            where = f"line {tb.tb_lineno}, in {code.co_name}: {text}"
        tb = tb.tb_next
    return where


def _warning_hint(category: type) -> str:
    if issubclass(category, RuntimeWarning):
        return (" A right answer computes without numeric warnings: an overflow means some intermediate value got "
                "huge (exp of a large number?), 'invalid value' means inf - inf, 0 * inf or 0 / 0 happened. "
                "Rewrite the formula so that it cannot happen (a numerically stable form).")
    return " A right answer runs without warnings."


def call(function: Any, *args: Any, name: str | None = None, copy: bool = True, watch: bool = True,
         kwargs: dict[str, Any] | None = None) -> Any:
    """Call a student's function and turn the usual early mistakes into clear messages.

    The arguments are copied first (arrays and tensors, also inside lists, tuples and dicts), so
    the student's code cannot change the test's own data; pass ``copy=False`` to test a function
    whose job is to change its argument in place. ``NotImplementedError`` (the release's
    placeholder) becomes "not implemented yet"; a missing or non-callable object says so; any
    other exception is reported with its type, message and the line of the student's code that
    raised it. A numeric or user warning raised while the function runs fails the check too
    (plain nbgrader would score the cell 0 for the warning it prints), with a hint. A loop that
    makes thousands of calls passes ``watch=False`` and runs inside one :func:`no_warnings` block
    instead (recording warnings costs more than a small function's own work). ``kwargs`` are passed as
    keyword arguments (and copied like the others).
    """
    __tracebackhide__ = True
    import warnings

    label = name or getattr(function, "__name__", "your function")
    if not callable(function):
        _fail(f"{label} should be a function, but it is {type(function).__name__}.")
    kwargs = dict(kwargs or {})
    if copy:
        args = tuple(_copied(a) for a in args)
        kwargs = {k: _copied(v) for k, v in kwargs.items()}
    try:
        if watch:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = function(*args, **kwargs)
        else:
            caught = []
            result = function(*args, **kwargs)
    except NotImplementedError as exc:
        if str(exc):  # not the release's bare placeholder: torch's "missing forward", a raise with a message
            where = student_line(exc)
            _fail(f"{label} raised NotImplementedError: {exc}" + (f" (at {where})" if where else ""))
        _fail(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except RecursionError:
        _fail(
            f"{label} hit Python's recursion limit: some function calls itself without end. If it walks a graph "
            "recursively, a deep graph needs an explicit stack (a list you push to and pop from) instead; if it "
            "should not recurse at all, look for a call of itself, also through an operator (a + b calls add)."
        )
    except Exception as exc:  # noqa: BLE001 - reported to the student in words
        where = student_line(exc)
        _fail(f"{label} raised {type(exc).__name__}: {exc}" + (f" (at {where})" if where else ""))
    _fail_on_loud_warnings(caught, label)
    return result


def _fail_on_loud_warnings(caught: list, label: str) -> None:
    __tracebackhide__ = True
    loud = [w for w in caught if not issubclass(w.category, _QUIET_WARNINGS)]
    if loud:
        w = loud[0]
        import linecache

        line = ""
        if "/ipykernel_" in str(w.filename) or str(w.filename).startswith("<ipython-input-"):
            line = f" (at line {w.lineno}: {linecache.getline(w.filename, w.lineno).strip()})"
        elif w.filename == "<student's code>":
            line = f" (at line {w.lineno} of your code)"
        _fail(f"{label} raised a warning, {w.category.__name__}: {w.message}{line}.{_warning_hint(w.category)}")


@contextlib.contextmanager
def no_warnings(label: str) -> Iterator[None]:
    """Fail as :func:`call` does when the code in the block raises a numeric or user warning: for a
    loop of ``call(..., watch=False)``, one record of warnings instead of one per call."""
    __tracebackhide__ = True
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    _fail_on_loud_warnings(caught, label)


def is_a(obj: Any, cls: type) -> bool:
    """``isinstance(obj, cls)``, also for the stand-ins the grading command uses for the student's objects
    (they answer with the class names of the object they stand for)."""
    names = getattr(type(obj), "_gd_type_names", None)
    if names is not None:
        return f"{cls.__module__}.{cls.__qualname__}" in names(obj)
    return isinstance(obj, cls)


def beside(anchor: Any, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, made where ``anchor`` (a student's function or object) lives.

    In a notebook that is simply the call. The grading command runs the student's code in another
    process; a network or an optimizer that a test hands to the student's function must be made
    there, so it builds the object beside ``anchor`` (``factory`` must be a function or class of
    goingdeeper or torch).
    """
    builder = getattr(type(anchor), "_gd_build", None)
    if builder is not None:
        return builder(anchor, f"{factory.__module__}.{factory.__qualname__}", args, kwargs)
    return factory(*args, **kwargs)


def read_path(obj: Any, *steps: Any) -> Any:
    """``obj.a[k].b`` for steps ``('a', k, 'b')``: a string step reads an attribute, anything else indexes.

    The grading command follows the whole path inside the student's process in one step (so it
    reads the student's own links); in a plain notebook this is ordinary attribute access.
    """
    reader = getattr(type(obj), "_gd_read_path", None)
    if reader is not None:
        return reader(obj, *steps)
    for step in steps:
        obj = getattr(obj, step) if isinstance(step, str) else obj[step]
    return obj


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
    mistakes: Sequence[tuple[Any, str]] = (),
) -> None:
    """Fail unless ``actual`` has ``expected``'s shape and values; name the usual mistakes when it does not.

    ``mistakes`` lists (value a known mistake gives, what to tell the student) pairs, tried first;
    then a transposed result, a flipped sign, and (given ``batch_size``) a result averaged over the
    batch where it should be summed, or the reverse, are recognised. The message gives the largest
    error and where it is; a recognised mistake replaces ``hint``.
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
    for value, message in mistakes:
        value = np.asarray(value, dtype=float)
        if value.shape == got.shape and close(got, value) and np.abs(value).max(initial=0.0) > 1e-8:
            diagnosis, hint = f" {message}", ""
            break
    if diagnosis:
        pass
    elif got.ndim == 2 and got.shape[0] == got.shape[1] and close(got, want.T):
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
    want_text, got_text = _fmt_pair(float(want[worst]), float(got[worst]))
    _fail(
        f"{name} is wrong: the largest error is {float(error.max()):.3g}{where} "
        f"(expected {want_text}, got {got_text}).{diagnosis} {hint}".strip()
    )


def own_work(*names: str, torch: bool = True, allow: Sequence[str] = ()) -> None:
    """Fail unless the answer that defines ``names`` is the student's own code (read, never run).

    It may not call, subclass, import, exec or read the source of the course's package, except the
    dotted names in ``allow`` (``"cifar.normalize"``); with ``torch=False`` (derivations by hand) it
    may not use torch. See :mod:`goingdeeper.ownwork`.
    """
    __tracebackhide__ = True
    from .ownwork import check_own_work

    check_own_work(names, torch=torch, allow=allow)
