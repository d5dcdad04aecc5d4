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

__all__ = ["setup", "grading_mode", "static_mode", "__version__"]


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


def _short_check_failures() -> None:
    """In a notebook, show a failed check as a short message instead of a traceback.

    A test cell that fails raises ``CheckFailed``; its message already says, in words, what is wrong
    and where in the student's code. IPython would print it under a traceback through the checking
    code, which reads like a crash. This shows the message and the test cell's line that made the
    check instead. It is still an error (the cell stops, and nbgrader scores it 0); any other
    exception keeps its full traceback.
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
        import textwrap

        line = ""
        frame_tb = tb
        while frame_tb is not None:  # the last frame that belongs to the notebook cell
            name = frame_tb.tb_frame.f_code.co_filename
            if "ipykernel_" in name or name.startswith("<ipython-input-"):
                import linecache

                text = linecache.getline(name, frame_tb.tb_lineno).strip()
                line = f"(checked at line {frame_tb.tb_lineno} of this cell: {text})"
            frame_tb = frame_tb.tb_next
        red, bold, reset = "\x1b[31m", "\x1b[1m", "\x1b[0m"
        body = textwrap.fill(str(value), width=110, break_long_words=False, break_on_hyphens=False)
        lines = [f"{red}{bold}\u2717 Not yet:{reset} {body.splitlines()[0] if body else ''}"]
        lines += body.splitlines()[1:]
        if line:
            lines.append(line)
        # IPython ignores what a handler returns from a running cell: show it as the cell's error output
        # (ename CheckFailed, so the cell failed for nbgrader too).
        shell._showtraceback(etype, value, ["\n".join(lines)])

    shell.set_custom_exc((CheckFailed,), handler)
