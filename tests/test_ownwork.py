"""The own-work rule (goingdeeper.ownwork): an answer that uses the course's package, or torch in a
derivation, is found by reading the cells; honest answers, shadowed names and allowed plumbing are not."""

from __future__ import annotations

import pytest

from goingdeeper import ownwork
from goingdeeper.checks import CheckFailed, own_work
from goingdeeper.ownwork import find_breaches

SETUP = """import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import goingdeeper
from goingdeeper import cifar, models, scalar
from goingdeeper.checks import call, expect_close

goingdeeper.setup(seed=0)
"""


def _read(cell: str, *names: str, torch: bool = True, allow=(), more=()):
    breaches, evasions, missing = find_breaches([SETUP, *more, cell], names, torch=torch,
                                                allow=[f"goingdeeper.{a}" for a in allow])
    return [b.what for b in breaches], [e.what for e in evasions], missing


@pytest.mark.parametrize("cell, names, what", [
    ("def sin_graph(x, y):\n    return scalar.run_torch(x, y)\n", ["sin_graph"],
     "goingdeeper.scalar.run_torch"),
    ("sin_graph = scalar.run_torch\n", ["sin_graph"], "goingdeeper.scalar.run_torch"),
    ("def helper(a):\n    return goingdeeper.scalar.run_engine(a, a, a)\n\n\ndef sin_graph(x, y):\n"
     "    return helper(x)\n", ["sin_graph"], "goingdeeper.scalar.run_engine"),
    ("class PreActBlock(models.PreActBlock):\n    pass\n", ["PreActBlock"], "goingdeeper.models.PreActBlock"),
    ("from goingdeeper import models as m\n\n\nclass Net(nn.Module):\n    def forward(self, x):\n"
     "        return m.cifar_net(x)\n", ["Net"], "goingdeeper.models.cifar_net"),
    ("def f(x):\n    from goingdeeper.cifar import augment\n    return augment(x)\n", ["f"],
     "an import of goingdeeper.cifar.augment"),
    ("import inspect\nexec(inspect.getsource(goingdeeper.models))\n\n\ndef net():\n    return cifar_net(20)\n",
     ["net"], "goingdeeper.models"),
    ("globals()['augment'] = cifar.augment\n", ["augment"], "goingdeeper.cifar.augment"),
    ("def f(x):\n    return call(abs, x)\n", ["f"], "goingdeeper.checks.call"),
    ("def evaluate(model, x):\n    return model(cifar.augment(x))\n", ["evaluate"], "goingdeeper.cifar.augment"),
    ("from instructor.train_full import main\n\n\ndef f(x):\n    return main(x)\n", ["f"],
     "instructor.train_full.main"),
    ("def f(x):\n    import autograder.reference.degradation as r\n    return r.augment(x)\n", ["f"],
     "an import of autograder.reference.degradation"),
])
def test_the_course_package_in_an_answer_is_a_breach_and_named(cell, names, what):
    breaches, _, _ = _read(cell, *names, allow=["cifar.normalize"])
    assert breaches[:1] == [what]


def test_a_helper_in_another_cell_is_followed():
    helper = "def _norm(x):\n    return scalar.run_torch(x, x)\n"
    breaches, _, _ = _read("def sin_graph(x, y):\n    return _norm(x)\n", "sin_graph", more=[helper])
    assert breaches == ["goingdeeper.scalar.run_torch"]


@pytest.mark.parametrize("cell, names", [
    ("def sin_graph(x, y):\n    z = x + y\n    return z, math.sin(z), np.cos(z)\n", ["sin_graph"]),
    ("def evaluate(model, x, train=None, models=3):\n    cifar = x\n    return model(cifar) + models\n",
     ["evaluate"]),  # parameters and locals that share a module's name are the student's own
    ("def evaluate(model, x):\n    return model(cifar.normalize(x))\n", ["evaluate"]),  # allowed plumbing
    ("class Block(nn.Module):\n    scalar = 2\n\n    def forward(self, x):\n        return F.relu(x)\n", ["Block"]),
    ("def f(x):\n    def scalar(v):\n        return v\n    return scalar(x)\n", ["f"]),
])
def test_honest_answers_and_shadowed_names_are_not_breaches(cell, names):
    breaches, evasions, missing = _read(cell, *names, allow=["cifar.normalize"])
    assert (breaches, evasions, missing) == ([], [], [])


def test_torch_only_where_the_exercise_forbids_it():
    cell = "def grads(x):\n    t = torch.tensor(x, requires_grad=True)\n    (t * t).sum().backward()\n    return t.grad\n"
    assert _read(cell, "grads")[0] == []
    assert _read(cell, "grads", torch=False)[0] == ["torch.tensor"]
    assert _read("def f(x):\n    import torch\n    return torch.ones(1)\n", "f", torch=False)[0] == ["torch"]


def test_evasive_forms_are_flags_not_breaches():
    cell = ("def f(x):\n    import importlib\n    m = importlib.import_module('going' + 'deeper.cifar')\n"
            "    return getattr(m, 'aug' + 'ment')(x)\n")
    breaches, evasions, _ = _read(cell, "f")
    assert breaches == [] and evasions == ["an import of importlib", "getattr with a computed name"]


def test_the_message_names_the_rule_the_line_and_the_helper():
    breaches, _, _ = find_breaches([SETUP, "def h(a):\n    x = 1\n    return scalar.run_engine(a, a, a)\n",
                                    "def lecture_forward(x, y, z):\n    return h(x)\n"], ["lecture_forward"])
    message = breaches[0].message()
    assert "line 3 of the cell of h, which it uses: return scalar.run_engine(a, a, a)" in message
    assert "may not call, subclass, import, exec or read the source of the course's own package" in message


def test_last_definition_wins_as_in_the_kernel():
    cells = ["def f(x):\n    return scalar.run_torch(x, x)\n", "def f(x):\n    return x\n"]
    assert find_breaches([SETUP, *cells], ["f"])[0] == []
    assert find_breaches([SETUP, *reversed(cells)], ["f"])[0] != []


def test_cells_with_magics_or_syntax_errors_are_read_as_far_as_possible():
    cell = "%time x = 1\ndef f(x):\n    return scalar.run_torch(x, x)\n"
    assert _read(cell, "f")[0] == ["goingdeeper.scalar.run_torch"]
    assert _read("def f(:\n", "f") == ([], [], ["f"])


def test_own_work_reads_what_the_grader_hands_over_and_flags_evasions():
    flags: list[str] = []
    cells = [SETUP, "def f(x):\n    return eval('x')\n", "def g(x):\n    return cifar.augment(x)\n"]
    ownwork.GRADER_HOOK = ownwork.GraderHook(lambda: cells, flags.append)
    try:
        own_work("f")
        assert flags and "eval()" in flags[0]
        with pytest.raises(CheckFailed, match=r"g uses goingdeeper\.cifar\.augment \(line 2 of its cell"):
            own_work("g")
        own_work("g", allow=["cifar.augment"])
        own_work("nowhere")
        assert "nowhere is not defined by a def, class or assignment the grader can read" in flags[-1]
    finally:
        ownwork.GRADER_HOOK = None


def test_outside_a_notebook_there_is_nothing_to_read():
    own_work("anything")  # no IPython shell, no grader: no text, no verdict


def test_names_bound_inside_top_level_blocks_are_definitions():
    cell = ("try:\n    from scipy import special\nexcept ImportError:\n    special = None\n"
            "if True:\n    def helper(x):\n        return scalar.run_torch(x, x)\n"
            "for k in range(3):\n    pass\n\n\ndef f(x):\n    return helper(special, k)\n")
    assert _read(cell, "f")[0] == ["goingdeeper.scalar.run_torch"]
    assert _read(cell.replace("scalar.run_torch(x, x)", "x"), "f") == ([], [], [])


def test_a_rebinding_in_the_same_cell_counts_in_order():
    assert _read("cifar = 5\nfrom goingdeeper import cifar\n\n\ndef f(x):\n    return cifar.augment(x)\n", "f")[0] == \
        ["goingdeeper.cifar.augment"]
    assert _read("from goingdeeper import cifar\ncifar = 5\n\n\ndef f(x):\n    return cifar.augment(x)\n", "f")[0] == []


# -- likeness to the course's code ------------------------------------------------------------------
def _disguised(source: str) -> str:
    """``source`` as a copier would leave it: every name changed, docstrings gone, a comment added."""
    import ast

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            node.id = f"my_{node.id}"
            return node

        def visit_arg(self, node):
            node.arg, node.annotation = f"my_{node.arg}", None
            return node

        def visit_FunctionDef(self, node):
            self.generic_visit(node)
            node.name, node.returns = (node.name if node.name.startswith("__") else f"my_{node.name}"), None
            if ast.get_docstring(node):
                node.body = node.body[1:]
            return node

    tree = Rename().visit(ast.parse(source))
    return "# written by me\n" + ast.unparse(ast.fix_missing_locations(tree))


def test_a_copy_of_the_package_with_its_names_changed_is_flagged_for_the_instructor():
    import inspect

    from goingdeeper import cifar, models

    for obj, where in ((cifar.balanced_indices, "goingdeeper.cifar.balanced_indices"),
                       (models.PreActBlock, "goingdeeper.models.PreActBlock")):
        cell = _disguised(inspect.getsource(obj))
        name = f"my_{obj.__name__}" if inspect.isfunction(obj) else obj.__name__
        breaches, evasions, missing = _read(cell, name)
        assert not breaches and not missing, (breaches, missing)  # a likeness is the instructor's to judge
        assert evasions == [f"the same code as {where} with its names changed"], evasions
    # Pasted into a function of one's own: a run of statements is enough.
    body = inspect.getsource(cifar.balanced_indices).split('"""', 2)[2]
    cell = "def mine(labels, n, g, what='n'):\n    print('choosing')" + body
    assert _read(cell, "mine")[1] == ["the same code as goingdeeper.cifar.balanced_indices with its names changed"]
    flags: list[str] = []
    ownwork.GRADER_HOOK = ownwork.GraderHook(lambda: [SETUP, cell], flags.append)
    try:
        own_work("mine")  # no verdict
    finally:
        ownwork.GRADER_HOOK = None
    assert len(flags) == 1 and "a copy of the course's code or a coincidence: compare them" in flags[0], flags


def test_small_idioms_and_the_solutions_are_nobodys_copy():
    """Measured: no answer cell of solutions/ and no right or wrong version in tests/wrong has a piece of
    MIN_COPY_NODES nodes or more in common with the package (the largest accidental likeness is 11 nodes)."""
    import nbformat

    from instructor.scratch import ROOT
    from wrong import by_assignment, right_by_assignment

    sources = [c.source for p in sorted((ROOT / "solutions").glob("*/*.ipynb"))
               for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]
    sources += [w.source for ws in by_assignment().values() for w in ws]
    sources += [r.source for rs in right_by_assignment().values() for r in rs]
    sources.append("def train_step(model, optimizer, x, y):\n    optimizer.zero_grad()\n"
                   "    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    optimizer.step()\n"
                   "    return loss.item(), (model(x).argmax(1) != y).sum().item()\n")
    likenesses = []
    for source in sources:
        tree = ownwork._parse(source)
        found = tree is not None and ownwork.copied_from(tree)
        if found:
            likenesses.append((found[0], source[:120]))
    assert not likenesses, likenesses


def test_in_the_kernel_an_answer_not_yet_run_is_named_not_a_bare_name_error(monkeypatch):
    monkeypatch.setattr(ownwork, "_kernel_sources", lambda: [SETUP])
    monkeypatch.setattr(ownwork, "_kernel_namespace", lambda: {"total": 5})
    with pytest.raises(CheckFailed, match=r"^direct, speedup are not defined yet: write the answer cell above"):
        own_work("direct", "total", "speedup")
    monkeypatch.setattr(ownwork, "_kernel_namespace", lambda: {"direct": 1, "total": 5, "speedup": 2})
    own_work("direct", "total", "speedup")
