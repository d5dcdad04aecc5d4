"""A correct submission that scribbles over its arguments: proof that tests compute their expected values first.

Every function an answer cell defines is wrapped so that, after it has
computed its (correct) result, it overwrites the numpy arrays and torch
tensors it was given with NaN. A test cell that computed an expected value
from its own arrays *after* calling the student's function, or passed the same
arrays to a second function, would then compare against garbage and fail this
correct submission. So: the scribbler must earn full marks, in both graders.

Only the outermost call scribbles (an answer calling another answer shares
arrays on purpose), and results are copied first (a result may be a view of
an argument). Functions whose contract is to leave an argument unchanged are
not wrapped: for them, scribbling is a wrong answer (``KEEPS_ARGUMENTS``).
"""

from __future__ import annotations

import ast

import nbformat

from instructor.scratch import answer_ids

KEEPS_ARGUMENTS = {"numerical_gradient"}

HELPERS = '''
if "_gd_scribbling" not in globals():
    import functools as _gd_functools

    _gd_depth = 0

    def _gd_copy(value, depth=0):
        if depth > 4:
            return value
        if type(value).__module__ == "numpy" and hasattr(value, "copy") and hasattr(value, "shape"):
            return value.copy()
        if type(value).__module__.startswith("torch") and hasattr(value, "clone"):
            return value.clone()
        if type(value) in (list, tuple):
            return type(value)(_gd_copy(v, depth + 1) for v in value)
        if type(value) is dict:
            return {k: _gd_copy(v, depth + 1) for k, v in value.items()}
        return value

    def _gd_scribble(value, depth=0):
        if depth > 4:
            return
        if type(value).__module__ == "numpy" and getattr(value, "flags", None) is not None:
            if value.flags.writeable and value.dtype.kind == "f":
                value.fill(float("nan"))
        elif type(value).__module__.startswith("torch") and hasattr(value, "is_floating_point"):
            # No torch import here: the helpers are part of the answer cells, and notebooks 01-03 forbid torch
            # in answers. A tensor that does not require grad can be filled in place without no_grad().
            if value.is_floating_point() and not value.requires_grad:
                value.fill_(float("nan"))
        elif type(value) in (list, tuple):
            for v in value:
                _gd_scribble(v, depth + 1)
        elif type(value) is dict:
            for v in value.values():
                _gd_scribble(v, depth + 1)

    def _gd_scribbling(fn):
        @_gd_functools.wraps(fn)
        def scribbler(*args, **kwargs):
            global _gd_depth
            _gd_depth += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                _gd_depth -= 1
            if _gd_depth == 0:
                result = _gd_copy(result)
                _gd_scribble(list(args) + list(kwargs.values()))
            return result
        return scribbler
'''


def _defined(source: str) -> tuple[list[str], list[str]]:
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name not in KEEPS_ARGUMENTS]
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    return functions, classes


def scribbler(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The solution with every answer's functions (and classes' forward methods) wrapped."""
    nb = nbformat.from_dict(solution)
    answers = set(answer_ids(nb))
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") not in answers:
            continue
        functions, classes = _defined(cell.source)
        if not functions and not classes:
            continue
        wraps = [f"{name} = _gd_scribbling({name})" for name in functions]
        wraps += [f"{name}.forward = _gd_scribbling({name}.forward)" for name in classes]
        cell.source = cell.source + "\n\n" + HELPERS.strip() + "\n" + "\n".join(wraps)
    return nb
