"""Going Deeper: helpers for the notebook series.

The notebooks teach; this package does the work around them: checks that
explain failures in words (:mod:`goingdeeper.checks`), the oracle for the
scalar autodiff engine (:mod:`goingdeeper.scalar`), plots
(:mod:`goingdeeper.plotting`), data and the training loop. The instructor's commands (release, the student
edition, the reader's site, scratch courses, the full-length training run) live in ``instructor/``, the grader
and its references in ``autograder/``; neither ships to students.
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"

__all__ = ["MESSAGE_WIDTH", "failure_lines", "setup", "grading_mode", "static_mode", "__version__"]


def grading_mode() -> str | None:
    """Return nbgrader's mode ('autograde', 'validate') when nbgrader runs the notebook, else None.

    Notebooks shrink long computations when this is not None.
    """
    return os.environ.get("NBGRADER_EXECUTION") or None


def static_mode() -> bool:
    """True when ``GOINGDEEPER_STATIC=1``: explorers draw a static figure of a few settings instead of widgets.

    ``bash course.sh site`` sets it, so that the reader's edition shows every
    explorer as a figure that needs no running kernel.
    """
    return os.environ.get("GOINGDEEPER_STATIC") == "1"


def setup(seed: int = 0, threads: int | None = 1) -> None:
    """The one set-up call at the top of every notebook.

    Seeds Python's, numpy's and torch's random generators, sets a plain matplotlib style so figures
    look the same on every machine, and sets torch's number of threads. The notebooks' networks are
    small: one thread is as fast as several on an idle machine and many times faster on a busy one
    (threads of a pool fighting over a few cores wait for each other). ``threads=None`` keeps torch's
    default (one per core); the environment variable ``GOINGDEEPER_THREADS`` overrides both.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None:
        torch.manual_seed(seed)
        chosen = os.environ.get("GOINGDEEPER_THREADS")
        if chosen:
            threads = int(chosen)
        if threads is not None:
            torch.set_num_threads(max(1, threads))
    _short_check_failures()
    import matplotlib

    matplotlib.rcParams.update(
        {
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


#: The width a failed check's message is wrapped to: nbgrader's Validate cuts every line of an error at 87
#: characters (its Validator.width, 90, less 3) after indenting it by 4, so a line of 82 arrives whole.
MESSAGE_WIDTH = 82


def _in_notebook(frame_tb: object) -> bool:
    name = frame_tb.tb_frame.f_code.co_filename  # type: ignore[attr-defined]
    return "ipykernel_" in name or name.startswith("<ipython-input-")


def failure_lines(value: BaseException, tb: object, what: str = "checked") -> list[str]:
    """A failed check as the student reads it: "✗ Not yet:" and the message, then the line of the test cell
    that made the check, wrapped to :data:`MESSAGE_WIDTH` columns (so that nbgrader's Validate dialog shows
    every word)."""
    import linecache
    import textwrap

    cell_line = any_line = ""
    frame_tb = tb
    while frame_tb is not None:  # the line of the cell that ran (the last notebook frame at a cell's top level)
        if _in_notebook(frame_tb):
            text = linecache.getline(frame_tb.tb_frame.f_code.co_filename, frame_tb.tb_lineno).strip()
            any_line = f"({what} at line {frame_tb.tb_lineno} of this cell: {text})"
            if frame_tb.tb_frame.f_code.co_name == "<module>":
                cell_line = any_line
        frame_tb = frame_tb.tb_next
    line = cell_line or any_line
    red, bold, reset = "\x1b[31m", "\x1b[1m", "\x1b[0m"
    prefix = "\u2717 Not yet:"
    lines = textwrap.wrap(f"{prefix} {value}", width=MESSAGE_WIDTH, break_long_words=False,
                          break_on_hyphens=False) or [prefix]
    lines[0] = lines[0].replace(prefix, f"{red}{bold}{prefix}{reset}", 1)
    if line:
        lines += textwrap.wrap(line, width=MESSAGE_WIDTH, subsequent_indent="  ")
    return lines


def _placeholder(tb: object) -> tuple[str, object] | None:
    """(name, cell traceback) when a bare ``raise NotImplementedError()`` of a notebook's own function (a blank
    not filled in yet) stopped a cell, else None."""
    last = tb
    while last is not None and last.tb_next is not None:  # type: ignore[attr-defined]
        last = last.tb_next  # type: ignore[attr-defined]
    if last is None or not _in_notebook(last):
        return None
    first = tb
    while first is not None and not _in_notebook(first):
        first = first.tb_next  # type: ignore[attr-defined]
    return last.tb_frame.f_code.co_name, first  # type: ignore[attr-defined]


def _short_check_failures() -> None:
    """In a notebook, show a failed check as a short message instead of a traceback.

    A test cell that fails raises ``CheckFailed``; its message already says, in words, what is wrong
    and where in the student's code. IPython would print it under a traceback through the checking
    code, which reads like a crash. This shows the message and the test cell's line that made the
    check instead. A blank not filled in yet (the release's bare ``raise NotImplementedError()`` in a
    function of the notebook) is shown the same way, naming the function and the line that needed it.
    Either is still an error (the cell stops, and nbgrader scores it 0); any other exception keeps its
    full traceback.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return
    from .checks import CheckFailed

    def handler(shell, etype, value, tb, tb_offset=None):  # noqa: ANN001 - IPython's signature
        if isinstance(value, CheckFailed):
            shell._showtraceback(etype, value, ["\n".join(failure_lines(value, tb))])
            return
        found = _placeholder(tb) if isinstance(value, NotImplementedError) and not str(value) else None
        if found is None:  # any other error keeps IPython's own traceback
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return
        name, cell_tb = found
        what = ("this cell is" if name == "<module>" else f"{name} is") + " not implemented yet: replace `raise " \
            "NotImplementedError()` with your code."
        shell._showtraceback(etype, value, ["\n".join(failure_lines(what, cell_tb, "needed"))])

    shell.set_custom_exc((CheckFailed, NotImplementedError), handler)
