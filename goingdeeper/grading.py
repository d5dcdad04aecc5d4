"""Reference implementations for hidden tests.

The references live in ``autograder/reference/`` at the course root, outside
this package, so that installing the package for students ships no answers.
Hidden test cells load them with :func:`load_reference`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["autograder_dir", "load_reference", "reference_if_present"]


def autograder_dir() -> Path:
    """The course's ``autograder/`` folder.

    ``GOINGDEEPER_AUTOGRADER`` wins when set; otherwise the folder beside this
    package in the course checkout (the package is installed in editable mode).
    """
    env = os.environ.get("GOINGDEEPER_AUTOGRADER")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "autograder"


def load_reference(topic: str) -> ModuleType:
    """Load ``autograder/reference/<topic>.py`` as a module (cached after the first load)."""
    key = f"goingdeeper_reference_{topic}"
    if key in sys.modules:
        return sys.modules[key]
    path = autograder_dir() / "reference" / f"{topic}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"The reference implementation {path} is missing. Hidden tests run only where the "
            "course's autograder/ folder is present: run them from the course checkout, or set "
            "GOINGDEEPER_AUTOGRADER to the path of autograder/."
        )
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def reference_if_present(topic: str) -> ModuleType | None:
    """:func:`load_reference`, or None where the course's ``autograder/`` folder is not (a package installed
    for students): checks that can work without the reference use this."""
    try:
        return load_reference(topic)
    except FileNotFoundError:
        return None
