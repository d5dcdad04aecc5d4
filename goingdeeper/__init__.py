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


def setup(seed: int = 0) -> None:
    """The one set-up call at the top of every notebook.

    Seeds Python's, numpy's and torch's random generators, makes torch use
    float64 by default where a notebook asks for it later, and sets a plain
    matplotlib style so figures look the same on every machine.
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
