"""Going Deeper: helpers for the notebook series.

The notebooks teach; this package does the work around them: checks that
explain failures in words (:mod:`goingdeeper.checks`), the oracle for the
scalar autodiff engine (:mod:`goingdeeper.scalar`), plots
(:mod:`goingdeeper.plotting`) and the course pipeline (:mod:`goingdeeper.course`).
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"

__all__ = ["setup", "grading_mode", "__version__"]


def grading_mode() -> str | None:
    """Return nbgrader's mode ('autograde', 'validate') when nbgrader runs the notebook, else None.

    Notebooks shrink long computations when this is not None.
    """
    return os.environ.get("NBGRADER_EXECUTION") or None


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
