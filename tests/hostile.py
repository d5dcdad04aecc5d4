"""Hostile submissions, built from notebook 01's solution and release.

Each case is a submission a student could hand in on purpose or by accident,
with what the grading command must conclude about it. The points of notebook
01: sin_graph 2, lecture_forward 1, lecture_local_grads 1, lecture_chain 2,
engine_add_mul 2, engine_sin_relu 2, engine_topological_order 2,
engine_backward 3 (15 in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

from goingdeeper.scratch import ROOT, replace_cell
from wrong import by_assignment

ASSIGNMENT = "01_computational_graphs"
FULL = 15.0
WRONG = {w.answer: w.source.strip() for w in reversed(by_assignment()[ASSIGNMENT])}  # first wrong version of each


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _with(nb, grade_id, source):
    return replace_cell(nb, grade_id, source)


def _prepend(nb, grade_id, code):
    return replace_cell(nb, grade_id, code.strip() + "\n" + _cell(nb, grade_id).source)


def _append(nb, grade_id, code):
    return replace_cell(nb, grade_id, _cell(nb, grade_id).source + "\n" + code.strip())


def _insert_after(nb, grade_id, code):
    nb = nbformat.from_dict(nb)
    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(code.strip()))
    return nb


@dataclass
class Case:
    name: str
    build: Callable  # (solution, release, course_root) -> notebook, or bytes for a broken file
    score: float | None  # expected score; None: could not be graded
    status: tuple[str, ...] = ("graded",)
    flags: tuple[str, ...] = ()  # phrases that must appear among the flags
    notes: tuple[str, ...] = ()  # phrases that must appear among the notes
    output_has: tuple[str, ...] = ()  # text that must appear in the autograded notebook's outputs
    output_lacks: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


SLOW_LOOP = '''
def sin_graph(x, y):
    while True:
        pass
'''

SWALLOW = '''
def sin_graph(x, y):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
'''

PATCHES = '''
import builtins, math
import numpy as np
import torch
import goingdeeper.checks as checks
import goingdeeper.scalar as scalar_module
np.allclose = lambda *a, **k: True
np.isclose = lambda *a, **k: True
math.isclose = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
checks.expect_close = lambda *a, **k: None
checks.expect_true = lambda *a, **k: None
scalar_module.check_backward = lambda *a, **k: None
builtins.isinstance = lambda *a, **k: True
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
'''

ALWAYS_EQUAL = '''
class Anything(float):
    def __new__(cls):
        return super().__new__(cls, 0.0)
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__
    def __sub__(self, other):
        return 0.0
    __rsub__ = __sub__
    def __abs__(self):
        return 0.0
    def __le__(self, other):
        return True
    __lt__ = __ge__ = __gt__ = __le__


def sin_graph(x, y):
    return (Anything(),) * 5
'''

REDEFINED = '''
def expect_close(*args, **kwargs):
    pass

def expect_true(*args, **kwargs):
    pass

def unpack(result, names, what):
    return (0.0,) * len(names)

def passed(message):
    print("\\u2713", message)
'''


def _snoop(course: Path) -> str:
    return f'''
import glob, os
targets = [
    {str(course)!r} + "/solutions/**/*.ipynb",
    {str(course)!r} + "/autograder/gradebook.db",
    {str(course)!r} + "/autograder/submitted/*/*/*.ipynb",
    {str(ROOT)!r} + "/autograder/reference/*.py",
    {str(ROOT)!r} + "/solutions/**/*.ipynb",
    os.path.expanduser("~") + "/.*",
]
found = []
for pattern in targets:
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path, "rb") as fh:
                fh.read(16)
            found.append(path)
        except OSError:
            pass
print("SNOOPED", len(found), found[:5])


def sin_graph(x, y):
    ns = {{}}
    exec(open({str(ROOT)!r} + "/autograder/reference/computational_graphs.py").read(), ns)
    return ns["sin_graph"](x, y)
'''


def _vandal(course: Path) -> str:
    return f'''
import os, glob, socket
victims = glob.glob({str(course)!r} + "/autograder/submitted/*/*/*.ipynb") + [
    {str(course)!r} + "/autograder/gradebook.db",
    {str(course)!r} + "/solutions/vandal.txt",
    {str(ROOT)!r} + "/vandal.txt",
    "/etc/vandal.txt",
]
written = []
for path in victims:
    try:
        with open(path, "w") as fh:
            fh.write("vandalised")
        written.append(path)
    except OSError:
        pass
print("VANDALISED", len(written), written[:5])
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    print("NETWORK open")
except OSError as exc:
    print("NETWORK closed")
'''


CASES = [
    Case("honest", lambda s, r, c: s, FULL),
    Case("untouched_release", lambda s, r, c: r, 0.0),
    Case("infinite_loop", lambda s, r, c: _with(s, "sin_graph", SLOW_LOOP), FULL - 2,
         status=("graded", "problems"), output_has=("time limit",)),
    Case("swallows_interrupts", lambda s, r, c: _with(s, "sin_graph", SWALLOW), FULL - 2,
         status=("graded", "problems"), notes=("killed",)),
    Case("memory_bomb", lambda s, r, c: _prepend(s, "sin_graph", "hog = bytearray(64 * 1024 ** 3)"), FULL - 2,
         output_has=("MemoryError",)),
    Case("memory_bomb_growing", lambda s, r, c: _prepend(
        s, "sin_graph", "hog = []\nwhile True:\n    hog.append(bytearray(256 * 1024 ** 2))"), FULL - 2,
         output_has=("MemoryError",)),
    Case("fork_bomb", lambda s, r, c: _append(s, "lecture_forward", "import os\nwhile True:\n    os.fork()"), FULL,
         status=("graded", "problems")),
    Case("megabytes_of_output", lambda s, r, c: _prepend(
        s, "sin_graph", "import os\nprint('x' * 50_000_000)\nos.write(1, b'y' * 20_000_000)"), FULL,
         output_has=("more characters of output dropped",)),
    Case("os_exit", lambda s, r, c: _append(s, "engine_backward", "import os\nos._exit(3)"), FULL - 3,
         status=("problems",), notes=("exit code 3",)),
    Case("sys_exit", lambda s, r, c: _append(s, "sin_graph", "import sys\nsys.exit(0)"), FULL),
    # kill(-1) reaches every process the sandbox's user may signal: none but itself and what it forked.
    Case("kills_everything", lambda s, r, c: _append(
        s, "lecture_local_grads", "import os, signal\nos.kill(-1, signal.SIGKILL)"), FULL),
    Case("kills_itself", lambda s, r, c: _append(
        s, "lecture_local_grads", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"), FULL - 1 - 2,
         status=("problems",), notes=("SIGKILL",)),
    Case("deleted_test_cell", lambda s, r, c: _drop(s, "test_engine_backward"), FULL, notes=("deleted cell",)),
    Case("duplicated_test_cell", lambda s, r, c: _duplicate(s, "test_sin_graph"), FULL, notes=("duplicated",)),
    Case("retyped_test_cells", lambda s, r, c: _retype(r), 0.0, notes=("edited test cell",)),
    Case("unmarked_test_cells", lambda s, r, c: _unmark(r), 0.0, notes=("deleted cell",)),
    Case("patched_comparisons", lambda s, r, c: _insert_after(
        _with(_with(_with(s, "sin_graph", WRONG["sin_graph"]), "lecture_forward", WRONG["lecture_forward"]),
              "engine_backward", WRONG["engine_backward"]), "setup", PATCHES), FULL - 2 - 1 - 3,
         status=("graded", "problems"),
         flags=("numpy.allclose", "goingdeeper.checks.expect_close", "builtins.isinstance", "exception handler")),
    # q is an Anything, so are f and df_dz = q: sin_graph, lecture_forward and lecture_local_grads fail.
    Case("always_equal_object", lambda s, r, c: _append(
        _with(s, "sin_graph", ALWAYS_EQUAL), "lecture_forward", "q = f = Anything()"), FULL - 2 - 1 - 1,
         flags=("compares equal to anything",)),
    Case("redefined_check_helpers", lambda s, r, c: _insert_after(
        _with(s, "sin_graph", WRONG["sin_graph"]), "setup", REDEFINED), FULL - 2,
         flags=("redefined expect_close",)),
    Case("reads_sources_and_gradebook", lambda s, r, c: _with(s, "sin_graph", _snoop(c)), FULL - 2,
         output_has=("SNOOPED 0 []",)),
    Case("writes_outside_scratch", lambda s, r, c: _prepend(s, "sin_graph", _vandal(c)), FULL,
         output_has=("VANDALISED 0 []", "NETWORK closed")),
    Case("syntax_error", lambda s, r, c: _with(s, "sin_graph", "def sin_graph(x, y)\n    return x +"), FULL - 2,
         output_has=("SyntaxError",)),
    Case("exception_at_import", lambda s, r, c: _prepend(s, "engine_add_mul", "import torchvision_is_not_here"),
         FULL - 2 - 2 - 3, output_has=("ModuleNotFoundError",)),
    Case("not_a_notebook", lambda s, r, c: b'{"cells": [ this is not json', None, status=("ungradable",)),
    Case("too_slow_overall", lambda s, r, c: _sleepy(s), None, status=("ungradable",)),
]


def _drop(nb, grade_id):
    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != grade_id]
    return nb


def _duplicate(nb, grade_id):
    nb = nbformat.from_dict(nb)
    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    nb.cells.insert(i + 1, nbformat.from_dict(nb.cells[i]))
    return nb


def _tests(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def _retype(nb):
    nb = nbformat.from_dict(nb)
    for c in _tests(nb):
        c.source = 'print("all tests pass")'
    return nb


def _unmark(nb):
    nb = nbformat.from_dict(nb)
    for c in _tests(nb):
        c.metadata.pop("nbgrader")
        c.source = "pass"
    return nb


def _sleepy(nb):
    for gid in ("sin_graph", "lecture_forward", "lecture_local_grads", "lecture_chain", "engine_add_mul",
                "engine_sin_relu"):
        nb = _prepend(nb, gid, "import time\ntime.sleep(12)")
    return nb
