"""Hostile submissions, built from notebook 01's solution and release.

Each case is a submission a student could hand in on purpose or by accident,
with what the grading command must conclude about it. The points of notebook
01: sin_graph 2, lecture_forward 1, lecture_local_grads 1, lecture_chain 2,
engine_add_mul 2, engine_sin_relu 2, engine_topological_order 2,
engine_backward 3, engine_training 1 (16 in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

from instructor.scratch import ROOT, replace_cell
from wrong import by_assignment

ASSIGNMENT = "01_computational_graphs"
FULL = 16.0
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
    files: Callable | None = None  # (submission folder, course root) -> None: what else the folder holds
    no_flags: bool = False  # an honest notebook: nothing may be flagged
    assignment: str = ASSIGNMENT
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
    Case("os_exit", lambda s, r, c: _append(s, "engine_backward", "import os\nos._exit(3)"), FULL - 3 - 1,
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
              "engine_backward", WRONG["engine_backward"]), "setup", PATCHES), FULL - 2 - 1 - 2 - 3 - 1,
         status=("graded", "problems"),
         flags=("numpy.allclose", "goingdeeper.checks.expect_close", "builtins.isinstance", "exception handler")),
    # lecture_forward returns Anythings, and lecture_backprop uses its f: sin_graph, lecture_forward, lecture_chain fail.
    Case("always_equal_object", lambda s, r, c: _append(
        _with(s, "sin_graph", ALWAYS_EQUAL), "lecture_forward",
        "q = Anything()\n\ndef lecture_forward(x, y, z):\n    return Anything(), Anything()"), FULL - 2 - 1 - 2,
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
         FULL - 2 - 2 - 3 - 1, output_has=("ModuleNotFoundError",)),
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


# -- issue 8: the holes an outside attack found, one case each ------------------------------------
NO_OP_HELPERS = '''
def expect_close(*args, **kwargs):
    pass

def expect_true(*args, **kwargs):
    pass

def expect_array_close(*args, **kwargs):
    pass

def call(function, *args, **kwargs):
    return None

def unpack(result, names, what):
    return (0.0,) * len(names)

def passed(message):
    print("\\u2713", message)

class _Anything:
    def __getattr__(self, name):
        return lambda *a, **k: None

scalar = _Anything()
'''


def _move(nb, grade_id, to_end=True):
    nb = nbformat.from_dict(nb)
    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    cell = nb.cells.pop(i)
    nb.cells.append(cell)
    return nb


def _setup_moved(r):
    """Every answer left blank; the set-up cell dragged below the last test; no-op helpers in its place."""
    nb = _move(r, "setup")
    nb.cells.append(nbformat.v4.new_code_cell(NO_OP_HELPERS.strip()))
    return nb


def _setup_as_markdown(r):
    nb = nbformat.from_dict(r)
    i, setup = next((k, c) for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    setup.cell_type = "markdown"
    setup.pop("outputs", None), setup.pop("execution_count", None)
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(NO_OP_HELPERS.strip()))
    return nb


def _markdown_copy_of_setup_first(r):
    nb = nbformat.from_dict(r)
    fake = nbformat.v4.new_markdown_cell("# set-up", metadata={"nbgrader": {"grade_id": "setup", "locked": True}})
    nb.cells.insert(0, fake)
    nb.cells.insert(1, nbformat.v4.new_code_cell(NO_OP_HELPERS.strip()))
    return nb


def _tests_marked_as_answers(r):
    nb = nbformat.from_dict(r)
    for c in _tests(nb):
        c.metadata.nbgrader["solution"] = True
        c.source = 'print(In[-1] if "In" in dir() else "")\nprint("all tests pass")'
    nb.cells.append(nbformat.v4.new_code_cell("print([v for v in globals().values() if isinstance(v, str)][-5:])"))
    return nb


def _tests_retyped_raw(s):
    nb = nbformat.from_dict(s)
    for c in _tests(nb):
        c.cell_type = "raw"
        c.pop("outputs", None), c.pop("execution_count", None)
    return nb


def _links(folder, course):
    """Links to the gradebook, the solution, a reference module, another student's work; a FIFO."""
    (folder / "gradebook.db").symlink_to(course / "autograder" / "gradebook.db")
    (folder / "solution.ipynb.txt").symlink_to(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    (folder / "reference.py").symlink_to(ROOT / "autograder" / "reference" / "computational_graphs.py")
    (folder / "timestamp.txt").symlink_to(course / "autograder" / "gradebook.db")
    import os

    os.mkfifo(folder / "notes.txt")


USE_LINKED_REFERENCE = '''
import os
print("FILES", sorted(os.listdir(".")))
def sin_graph(x, y):
    ns = {}
    exec(open("reference.py").read(), ns)
    return ns["sin_graph"](x, y)
'''


def _fifo_notebook(folder, course):
    import os

    (folder / f"{ASSIGNMENT}.ipynb").unlink()
    os.mkfifo(folder / f"{ASSIGNMENT}.ipynb")


def _linked_notebook(folder, course):
    (folder / f"{ASSIGNMENT}.ipynb").unlink()
    (folder / f"{ASSIGNMENT}.ipynb").symlink_to(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


# A function the test calls announces a long answer on the grader's connection and sends it a byte at a time.
TRICKLE = '''
import os, struct, sys, time
def sin_graph(x, y):
    fd = int(sys.argv[1])
    os.write(fd, struct.pack(">I", 10_000_000))
    while True:
        os.write(fd, b" ")
        time.sleep(2)
'''

FORGED_OUTPUT = '''
import json, os, struct, sys
fd = int(sys.argv[1])
forged = json.dumps({"ok": True, "stdout": "x" * 15_000_000, "stderr": "y" * 15_000_000}).encode()
os.write(fd, struct.pack(">I", len(forged)) + forged)
'''

OVERSIZED = '''
import os, struct, sys
fd = int(sys.argv[1])
os.write(fd, struct.pack(">I", 48 * 1024 * 1024) + b"[" * 1000)
'''

DEEP_JSON = '''
import os, struct, sys
fd = int(sys.argv[1])
deep = b"[" * 100_000 + b"]" * 100_000
os.write(fd, struct.pack(">I", len(deep)) + deep)
'''

# Student code can reach the runner object that serves it: it is on the stack while a cell runs.
FIND_RUNNER = '''
import sys

def _find_runner():
    frame = sys._getframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if type(candidate).__name__ == "Runner":
            return candidate
        frame = frame.f_back

runner_class = type(_find_runner())
'''

FLAG_FLOOD = FIND_RUNNER + '''
runner_class.tamper_report = lambda self: ["flag %d \\udcff" % i for i in range(60_000)]
'''

# Copies of the input nodes stand in for them, and the runner is patched to report each copy under its
# original's reference number: the identity check must still see the copy.
COPYING_ENGINE = FIND_RUNNER + '''
import copy

original_make_ref = runner_class.make_ref

def make_ref(self, obj):
    return original_make_ref(self, getattr(obj, "_copied_from", obj))

runner_class.make_ref = make_ref

def _copy(node):
    twin = copy.copy(node)
    twin._copied_from = node
    return twin

def add(a, b):
    return Value(a.data + b.data, parents=(_copy(a), _copy(b)), local_grads=(1.0, 1.0), op="+")

def mul(a, b):
    return Value(a.data * b.data, parents=(_copy(a), _copy(b)), local_grads=(b.data, a.data), op="*")
'''

COPYING_UNARY = '''
def sin(a):
    return Value(math.sin(a.data), parents=(_copy(a),), local_grads=(math.cos(a.data),), op="sin")

def relu(a):
    return Value(max(a.data, 0.0), parents=(_copy(a),), local_grads=(1.0 if a.data > 0 else 0.0,), op="relu")
'''

VARS_PATCH = '''
import numpy as np, math
import goingdeeper.checks as checks
vars(np)["allclose"] = lambda *a, **k: True
vars(math)["isclose"] = lambda *a, **k: True
checks.__dict__.update(expect_close=lambda *a, **k: None)
'''

FORMULA_FLAG = '''
class Formula(float):
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__

Formula.__qualname__ = '=HYPERLINK("http://example.com/x", "click")'

def lecture_forward(x, y, z):
    return Formula(x + y), Formula((x + y) * z)
'''

SNOOP_WIDE = '''
import glob, os
found = []
for pattern in {patterns!r}:
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path, "rb") as fh:
                fh.read(16)
            found.append(path)
        except OSError:
            pass
print("SNOOPED", len(found), found[:5])
print("ENVIRONMENT", sorted(os.environ))
print("TOKEN", os.environ.get("INSTRUCTOR_TOKEN"))
'''

OTHER_CHECKOUT = "/var/tmp/goingdeeper-other-checkout"


def _snoop_wide(course):
    patterns = [f"{ROOT}/solutions/**/*.ipynb", f"{ROOT}/autograder/reference/*.py", f"{ROOT}/autograder/*.py",
                f"{course}/**/*.ipynb", f"{course}/autograder/gradebook.db", f"{OTHER_CHECKOUT}/**/*",
                "/root/**/*.ipynb", "/home/**/*", "/etc/shadow", "/var/tmp/**/*"]
    return SNOOP_WIDE.format(patterns=patterns)


NAMEDTUPLE_ANSWER = '''
import collections
SinGraph = collections.namedtuple("SinGraph", "z L dL_dz dL_dx dL_dy")

def sin_graph(x, y):
    z = x + y
    return SinGraph(z, math.sin(z), math.cos(z), math.cos(z), math.cos(z))
'''

FRACTION_ANSWER = '''
import fractions

class Exact(float):
    pass

def lecture_forward(x, y, z):
    q = fractions.Fraction(x) + fractions.Fraction(y)
    return q, Exact(q * fractions.Fraction(z))
'''

HONEST_ODDITIES = '''
import torch
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
passed = 3  # an ordinary variable that happens to share a name with a test helper
'''


def _odd_grade_id(r):
    nb = nbformat.from_dict(r)
    nb.cells.insert(3, nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": ["a", "list"]}}))
    nb.cells.insert(4, nbformat.v4.new_code_cell("y = 2", metadata={"nbgrader": "not a dict"}))
    return nb


CASES += [
    # 1. the set-up cell moved, retyped, or shadowed by a markdown copy: tests still use the instructor's names
    Case("setup_moved_below_the_tests", lambda s, r, c: _setup_moved(r), 0.0, notes=("moved",),
         flags=("redefined expect_close",)),
    Case("setup_turned_into_markdown", lambda s, r, c: _setup_as_markdown(r), 0.0, notes=("turned into markdown",),
         flags=("redefined expect_close",)),
    Case("markdown_copy_of_setup_first", lambda s, r, c: _markdown_copy_of_setup_first(r), 0.0,
         notes=("setup",), flags=("redefined expect_close",)),
    # 2. metadata from the student never says what a cell is
    Case("tests_marked_as_answers", lambda s, r, c: _tests_marked_as_answers(r), 0.0, notes=("metadata",),
         output_lacks=("BEGIN HIDDEN TESTS", "load_reference", "default_rng(606)")),
    Case("tests_retyped_to_raw", lambda s, r, c: _tests_retyped_raw(s), FULL, notes=("turned into raw",)),
    # 3. links and special files in the submission folder are never followed
    Case("links_in_the_submission", lambda s, r, c: _with(s, "sin_graph", USE_LINKED_REFERENCE), FULL - 2,
         files=_links, notes=("not a regular file",), output_has=(f"FILES ['{ASSIGNMENT}.ipynb']",)),
    Case("notebook_is_a_fifo", lambda s, r, c: s, None, status=("ungradable",), files=_fifo_notebook),
    Case("notebook_is_a_link", lambda s, r, c: s, None, status=("ungradable",), files=_linked_notebook),
    # 4. a runner that trickles bytes is cut off at the cell's limit; grading goes on
    Case("trickles_an_answer", lambda s, r, c: _with(s, "sin_graph", TRICKLE), FULL - 2,
         status=("problems",)),
    # 8. what the runner sends is capped here: forged output, oversized and deeply nested messages, flag floods
    Case("forged_output", lambda s, r, c: _append(s, "engine_backward", FORGED_OUTPUT), FULL - 3 - 1,
         status=("problems",), notes=("protocol",)),
    Case("oversized_message", lambda s, r, c: _append(s, "engine_backward", OVERSIZED), FULL - 3 - 1,
         status=("problems",), notes=("protocol",)),
    Case("deeply_nested_message", lambda s, r, c: _append(s, "engine_backward", DEEP_JSON), FULL - 3 - 1,
         status=("problems",), notes=("protocol",)),
    Case("flag_flood", lambda s, r, c: _insert_after(s, "setup", FLAG_FLOOD), FULL, flags=("flag 1",)),
    # 9. the sandbox shows an allow-list: no course, no other checkout, no grader environment
    Case("snoops_everywhere", lambda s, r, c: _insert_after(s, "setup", _snoop_wide(c)), FULL,
         output_has=("SNOOPED 0 []", "TOKEN None")),
    # 10. copies reported under their originals' reference numbers: the link itself is checked. (The lie also
    # makes a + a's two copies one node to the grader, so topological_order fails too: plain nbgrader gives
    # this copying engine 8, the patched runner earns 6.)
    Case("copies_pass_as_the_input_nodes", lambda s, r, c: _with(_with(s, "engine_add_mul", COPYING_ENGINE),
                                                                   "engine_sin_relu", COPYING_UNARY),
         # copy.copy on every operation makes the notebook's own training cell (not a test) run ~9 s here: under
         # CI's load it can pass the 15 s cell limit. That is this student's code being slow; the score is the same.
         FULL - 2 - 2 - 2 - 3 - 1, status=("graded", "problems"), flags=("stack frames",)),
    # 11. namespace writes are flagged; a runner-chosen flag cannot become a spreadsheet formula; odd metadata
    Case("patches_through_vars", lambda s, r, c: _insert_after(_with(s, "sin_graph", WRONG["sin_graph"]), "setup",
                                                                VARS_PATCH), FULL - 2, flags=("namespace",)),
    Case("formula_in_a_flag", lambda s, r, c: _append(s, "lecture_forward", FORMULA_FLAG), FULL,
         flags=("HYPERLINK",)),
    Case("odd_grade_ids", lambda s, r, c: _odd_grade_id(s), FULL),
    # 12. right answers in other shapes earn their points; honest settings and names are not flagged
    Case("namedtuple_answer", lambda s, r, c: _with(s, "sin_graph", NAMEDTUPLE_ANSWER), FULL, no_flags=True),
    Case("fraction_and_float_subclass", lambda s, r, c: _with(s, "lecture_forward", FRACTION_ANSWER), FULL),
    Case("honest_settings_and_names", lambda s, r, c: _insert_after(s, "setup", HONEST_ODDITIES), FULL,
         no_flags=True, notes=("reuses the name passed",)),
]


# -- notebook 04: PyTorch modules across the wire --------------------------------------------------
RESNET = "04_resnet"
RESNET_FULL = 25.0  # residual_blanks 1, residual_wrapper 2, conv_cost 2, lecture_1x1 1, shortcut_a 1, basic_block 3,
# bottleneck 3, preact_block 2, imagenet_family 3, imagenet_macs 2, cifar_family 2, block_grad_norms 2,
# gradient_correlation 1

# Replays the outputs the visible test expects and forces the input's gradient with a hook. The package holds
# only the cases' inputs; their outputs come from the course's reference, which the student's process cannot
# load (resnet.expected gives None there): the block returns zeros, and fails the visible and hidden tests.
REPLAY = """
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride=1, option="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if option is not None and (stride != 1 or in_channels != planes):
            self.shortcut = ShortcutA(in_channels, planes, stride) if option == "A" else nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        for case in resnet.load_cases().values():
            want = resnet.expected(case) if case.kind == "block" else None
            if want is not None and case.x.shape == x.shape and torch.allclose(case.x, x.detach()):
                if x.requires_grad:
                    x.register_hook(lambda g, dx=want["dx"]: dx.float().clone())
                out = want["out"] if self.training else want["out_eval"]
                return out.float().clone() + 0 * x.sum()
        return torch.zeros(x.shape[0], self.conv1.out_channels, (x.shape[2] + 1) // self.conv1.stride[0],
                           (x.shape[3] + 1) // self.conv1.stride[0]) + 0 * x.sum()
"""

PACKAGE_NETWORK = """
def cifar_resnet(depth, residual=True):
    return models.cifar_net(depth, residual=residual)
"""

TORCH_PATCHES = """
import torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.nn.Module.load_state_dict = lambda self, *a, **k: None
torch.Tensor.backward = lambda self, *a, **k: None
"""

ALWAYS_EQUAL_TENSOR = """
class Agreeable(torch.Tensor):
    def __eq__(self, other):
        return torch.ones((), dtype=torch.bool)

    def allclose(self, *args, **kwargs):
        return True


class Residual(nn.Module):
    def __init__(self, branch):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return torch.zeros_like(x).as_subclass(Agreeable)
"""

CASES += [
    Case("resnet_honest", lambda s, r, c: s, RESNET_FULL, no_flags=True, assignment=RESNET),
    # basic_block fails on the hidden cases, and every network built from the replaying block fails with it
    # (imagenet_family 3, imagenet_macs 2, cifar_family 2).
    Case("resnet_replays_the_visible_cases", lambda s, r, c: _with(s, "basic_block", REPLAY),
         RESNET_FULL - 3 - 3 - 2 - 2, assignment=RESNET),
    Case("resnet_returns_the_package_network", lambda s, r, c: _with(s, "cifar_family", PACKAGE_NETWORK),
         RESNET_FULL - 2, assignment=RESNET),
    Case("resnet_patches_torch", lambda s, r, c: _insert_after(r, "setup", TORCH_PATCHES), 0.0,
         flags=("torch.allclose", "torch.nn.Module.load_state_dict"), assignment=RESNET),
    Case("resnet_always_equal_tensor", lambda s, r, c: _with(s, "residual_wrapper", ALWAYS_EQUAL_TENSOR),
         RESNET_FULL - 2, assignment=RESNET),
]
