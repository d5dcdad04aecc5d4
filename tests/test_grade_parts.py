"""The grading command's parts on their own: the wire codec, proxies, the tamper scan, the CLI's errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from instructor.scratch import ROOT

sys.path.insert(0, str(ROOT / "autograder"))
from grade import _safe_cell, without_hidden_tests  # noqa: E402
from report import message_pattern  # noqa: E402
from sandbox import boundary, wire  # noqa: E402
from sandbox.session import scan_for_tampering  # noqa: E402
from sandbox.trusted import Proxy, Remote, RemoteGlobals  # noqa: E402


def _no_refs(obj):
    raise AssertionError(f"{obj!r} should have travelled by value")


@pytest.mark.parametrize("value", [None, True, 3, -2**70, 1.5, float("inf"), "text", [1, (2.0, "a")],
                                   {"k": [1, 2], 3: None}, np.arange(6, dtype=np.float32).reshape(2, 3),
                                   np.array([True, False])])
def test_plain_data_round_trips_by_value(value):
    back = wire.decode(wire.encode(value, _no_refs), _no_refs)
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    else:
        assert back == value and type(back) is type(value)


def test_nan_numpy_scalars_and_tensors_arrive_as_plain_values():
    assert np.isnan(wire.decode(wire.encode(float("nan"), _no_refs), _no_refs))
    assert wire.decode(wire.encode(np.float64(2.5), _no_refs), _no_refs) == 2.5
    t = wire.decode(wire.encode(torch.ones(2, 2, requires_grad=True), _no_refs), _no_refs)
    assert isinstance(t, torch.Tensor) and t.requires_grad and t.shape == (2, 2)


def test_other_objects_travel_as_references():
    refs = []
    encoded = wire.encode([object(), np.array(["a"]), torch.zeros(2, dtype=torch.complex64)],
                          lambda o: refs.append(o) or {"__ref__": len(refs)})
    assert [e["__ref__"] for e in encoded] == [1, 2, 3]


def test_malformed_or_hostile_data_is_refused():
    for bad in [{"__nd__": "AAAA", "dtype": "|O", "shape": [1]}, {"__nd__": "AAAA", "dtype": "<f8", "shape": [9]},
                {"__unknown__": 1}, {"__dict__": [[[1, 2], 3]]}]:
        with pytest.raises(wire.WireError):
            wire.decode(bad, _no_refs)


def test_framing_refuses_oversized_messages():
    a, b = socket.socketpair()
    a.sendall(wire._HEADER.pack(wire.MAX_MESSAGE + 1))
    with pytest.raises(wire.WireError):
        wire.recv(b)
    wire.send(a, {"x": [1, 2]})


class FakeSandbox:
    """Answers like the runner, from a dict of objects, without a process."""

    limits = type("L", (), {"output_kb": 200})()

    def __init__(self, objects):
        self.objects = objects
        self.sent = []

    def request(self, msg, timeout, what):
        self.sent.append(msg)
        if msg["op"] == "lookup":
            if msg["name"] not in self.objects:
                return {"error": {"type": "NameError", "message": msg["name"]}}
            return {"value": {"__ref__": 1, "type": "m.Node", "callable": False}}
        if msg["op"] == "getattr":
            if msg["name"] == "data":
                return {"value": 2.0}
            return {"error": {"type": "AttributeError", "message": msg["name"]}}
        if msg["op"] == "binop":
            return {"value": True}
        if msg["op"] == "call":
            return {"error": {"type": "EvilError", "message": "no"}}
        return {"error": {"type": "KeyboardInterrupt", "message": ""}}


def test_proxies_keep_identity_and_equality_local():
    remote = Remote(FakeSandbox({"node": object()}))
    node = remote.lookup("node")
    again = remote.lookup("node")
    assert isinstance(node, Proxy) and node is again
    assert node != object() and not (node == 1.0)  # an always-equal object cannot fake equality here
    assert node.data == 2.0 and node.data == 2.0
    assert sum(m["op"] == "getattr" for m in remote.sandbox.sent) == 1  # cached until the student's code runs
    assert not hasattr(node, "detach")
    with pytest.raises(Exception, match="no") as err:
        node()
    assert type(err.value).__name__ == "EvilError"


def test_test_cells_see_builtins_and_their_own_names_before_the_students():
    remote = Remote(FakeSandbox({"len": object(), "node": object()}))
    ns = RemoteGlobals(remote, {"helper": 5})
    exec("result = (len([1, 2]), helper, node.data, [node.data for _ in range(2)])", ns)
    assert ns["result"] == (2, 5, 2.0, [2.0, 2.0])
    with pytest.raises(NameError):
        exec("missing_name", ns)


def test_scan_flags_patches_but_not_ordinary_code():
    flags = scan_for_tampering("import numpy as np\nfrom goingdeeper import checks\nnp.isclose = None\n"
                               "checks.call = print\nsetattr(np, 'allclose', None)\nimport sys\n"
                               "sys.modules['torch'] = None\nsys.settrace(None)")
    assert flags == ["code replaces numpy.isclose", "code replaces goingdeeper.checks.call",
                     "code replaces entries of sys.modules's namespace",
                     "code replaces attributes of numpy with setattr", "code installs a trace function"]
    assert scan_for_tampering("import numpy as np\nx = np.zeros(3)\nx[0] = 1\nclass A:\n    pass\nA.b = 1\n") == []
    assert scan_for_tampering("def broken(:") == []


def test_scan_sees_namespace_writes_and_the_runner_but_not_settings():
    assert scan_for_tampering("import numpy as np\nvars(np)['allclose'] = lambda *a: True") == [
        "code replaces entries of numpy's namespace"]
    assert scan_for_tampering("import numpy\nnumpy.__dict__.update(allclose=None)") == [
        "code replaces entries of numpy's namespace"]
    assert any("stack frames" in f for f in scan_for_tampering("import sys\nf = sys._getframe().f_back"))
    assert any("__main__" in f for f in scan_for_tampering("import __main__\n__main__.Runner = None"))
    # Settings are not code: an honest notebook may set them.
    assert scan_for_tampering("import torch\ntorch.backends.cudnn.deterministic = True\n"
                              "torch.backends.cudnn.benchmark = False\nimport numpy as np\n"
                              "np.set_printoptions(precision=3)") == []


def test_hidden_tests_are_cut_like_nbgrader_cuts_them():
    src = '"""doc"""\ncheck()\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\n'
    assert without_hidden_tests(src) == '"""doc"""\ncheck()\n'


def test_report_groups_messages_that_differ_only_in_numbers():
    a = message_pattern("dL_dx is wrong: expected -0.99, got 0.54 (off by 1.53).")
    b = message_pattern("dL_dx is wrong: expected 0.12, got 3 (off by 2.9e-1).")
    assert a == b == "dL_dx is wrong: expected #, got # (off by #)."


def _grade(*args):
    return subprocess.run([sys.executable, str(ROOT / "autograder" / "grade.py"), *args],
                          capture_output=True, text=True)


def test_cli_explains_what_to_do(tmp_path):
    run = _grade("01_computational_graphs", "--course", str(tmp_path))
    assert run.returncode == 2 and "collect submissions first" in run.stderr
    (tmp_path / "autograder" / "submitted").mkdir(parents=True)
    run = _grade("01_computational_graphs", "--course", str(tmp_path))
    assert run.returncode == 2 and "bash course.sh release" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_refuses_unknown_assignments(tmp_path):
    from instructor.scratch import ScratchCourse

    course = ScratchCourse(tmp_path / "c", course_config=True)
    course.add_source("01_computational_graphs")
    course.generate("01_computational_graphs")
    (course.submitted_dir).mkdir(parents=True)
    run = _grade("99_nothing", "--course", str(course.root))
    assert run.returncode == 2 and "'99_nothing' is not in the gradebook" in run.stderr
    run = _grade("01_computational_graphs", "--course", str(course.root))
    assert run.returncode == 1 and "no submissions" in run.stderr


def test_notebook_01_training_test_is_a_handful_of_requests(tmp_path):
    """test_engine_training trains beside the student's code in one go: not one request per scalar operation."""
    import re

    import nbformat

    from instructor.scratch import ScratchCourse
    from sandbox.trusted import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap cannot make a sandbox here (the grading command refuses to run)")
    a = "01_computational_graphs"
    course = ScratchCourse(tmp_path / "c", course_config=True)
    course.add_source(a)
    course.generate(a)
    course.submit("solution", a, nbformat.read(course.source_dir / a / f"{a}.ipynb", as_version=4), f"{a}.ipynb")
    run = _grade(a, "--course", str(course.root), "--quiet", "--workers", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    log = (course.root / "autograder" / "reports" / a / "logs" / "solution.log").read_text()
    found = re.search(r"test_engine_training: passed \((\d+) requests", log)
    assert found, log
    assert int(found.group(1)) <= 20, f"the training test made {found.group(1)} requests (was ~11,800)"


@pytest.fixture
def live(tmp_path):
    """A real runner (in bubblewrap where it works) and the grader's view of it, for one test."""
    import time

    from sandbox.trusted import Limits, Sandbox, bwrap_available

    sandbox = Sandbox(tmp_path / "scratch", Limits(), use_bwrap=bwrap_available())
    sandbox.start(time.monotonic() + 120)
    remote = Remote(sandbox)
    remote.deadline = time.monotonic() + 120

    def run(source):
        reply = sandbox.request({"op": "run", "source": source}, 60, "defining")
        assert reply["ok"], reply
        return reply

    yield sandbox, remote, run
    sandbox.kill()


def test_a_real_sandbox_round_trip(live):
    """Against a real runner: in-place changes to arrays come back, lent objects work, private ones do not."""
    import time

    from sandbox.trusted import CellTimeout

    sandbox, remote, run = live
    run("import numpy as np\n"
        "def nudge(x):\n    x[0] += 1\n    return 'done'\n"
        "def draw(rng, n):\n    return rng.normal(0, 1, size=n)\n"
        "def draw64(rng, n):\n    return rng.standard_normal(size=n, dtype=np.float64)\n"
        "def fill(rng, W):\n    rng.standard_normal(out=W)\n    return W\n"
        "def private(rng):\n    return rng._bit_generator\n"
        "def spin():\n    while True:\n        pass\n")
    ns = RemoteGlobals(remote, {"np": np})
    exec("x = np.zeros(3)\nr = nudge(x)\nd = draw(np.random.default_rng(0), 4)\n"
         "d64 = draw64(np.random.default_rng(0), 3)\nW = np.zeros((2, 2))\nw = fill(np.random.default_rng(1), W)", ns)
    assert ns["r"] == "done" and ns["x"].tolist() == [1.0, 0.0, 0.0]
    assert np.array_equal(ns["d"], np.random.default_rng(0).normal(0, 1, size=4))
    assert np.array_equal(ns["d64"], np.random.default_rng(0).standard_normal(size=3, dtype=np.float64))
    want_w = np.random.default_rng(1).standard_normal(size=(2, 2))
    assert np.array_equal(ns["w"], want_w) and np.array_equal(ns["W"], want_w)
    with pytest.raises(AttributeError):
        exec("private(np.random.default_rng(0))", ns)
    remote.deadline = time.monotonic() + 2
    with pytest.raises(CellTimeout):
        exec("spin()", ns)
    remote.deadline = time.monotonic() + 10
    exec("r2 = nudge(np.ones(2))", ns)  # the process survived the interrupt
    assert ns["r2"] == "done"


def test_what_the_students_code_returns_prints_and_warns_reaches_the_test(live):
    import collections
    import warnings

    from goingdeeper import checks

    sandbox, remote, run = live
    run("import collections, sys, warnings, fractions\nimport numpy as np\n"
        "Out = collections.namedtuple('Out', 'f grad')\n"
        "def pair(x):\n    return Out(float(x) ** 2, 2 * x)\n"
        "def third(x):\n    return fractions.Fraction(1, 3)\n"
        "def loud(x):\n    print('hello from the student')\n    return np.exp(np.array([1000.0]))\n"
        "def to_stderr(x):\n    print('oops', file=sys.stderr)\n    return x\n"
        "def broken(x):\n    y = x + 1\n    return y / 0\n")
    ns = RemoteGlobals(remote, {"np": np, "checks": checks})
    exec("p = checks.call(pair, 3.0)\nt = checks.as_number(checks.call(third, 1), 'third')", ns)
    assert ns["p"] == (9.0, 6.0) and type(ns["p"]) is tuple and abs(ns["t"] - 1 / 3) < 1e-15
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(checks.CheckFailed, match="RuntimeWarning: overflow"):
        exec("checks.call(loud, 1)", ns)
    assert "hello from the student" in out.getvalue()
    remote.stderr = []
    exec("checks.call(to_stderr, 1)", ns)
    assert remote.stderr == ["oops\n"]
    with pytest.raises(checks.CheckFailed, match=r"broken raised ZeroDivisionError.*line \d+, in broken: return y / 0"):
        exec("checks.call(broken, 1)", ns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec("loud(1)", ns)
    assert [w.category for w in caught] == [RuntimeWarning]
    del collections


def test_autograd_runs_through_the_students_module(live):
    """Gradients of a test's loss reach the test's input through the student's nn.Module, and its parameters
    get theirs in the student's process, as in one process."""
    sandbox, remote, run = live
    run("import torch\nfrom torch import nn\n"
        "class Block(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(3, 2)\n"
        "    def forward(self, x):\n        return torch.tanh(self.lin(x)) * 2\n"
        "torch.manual_seed(0)\nblock = Block()")
    torch.manual_seed(0)
    mine = torch.nn.Linear(3, 2)
    ns = RemoteGlobals(remote, {"torch": torch})
    x = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    state = {f"lin.{k}": v.detach().clone() for k, v in mine.state_dict().items()}
    ns.update(x=x, state=state)
    exec("block.load_state_dict(state)\nout = block(x)\n(out ** 2).sum().backward()\n"
         "names = [n for n, _ in block.named_parameters()]\nwgrad = block.lin.weight.grad", ns)
    want_x = x.detach().clone().requires_grad_(True)
    (torch.tanh(mine(want_x)) * 2).pow(2).sum().backward()
    assert torch.allclose(ns["out"], torch.tanh(mine(x)) * 2)
    assert torch.allclose(x.grad, want_x.grad) and torch.allclose(ns["wgrad"], mine.weight.grad)
    assert ns["names"] == ["lin.weight", "lin.bias"]
    # Only the parameters need gradients: backward still reaches them.
    exec("block.zero_grad()\nblock(torch.ones(1, 3)).sum().backward()\ng2 = block.lin.bias.grad", ns)
    assert ns["g2"] is not None and ns["g2"].shape == (2,)
    with torch.no_grad():
        exec("frozen = block(torch.ones(1, 3))", ns)
    assert not ns["frozen"].requires_grad


def test_links_are_followed_in_the_students_process(live):
    """An identity claimed by the runner's reference numbers is checked through the student's own link."""
    from goingdeeper.checks import read_path

    sandbox, remote, run = live
    run("class Node:\n    def __init__(self, data, parents=()):\n        self.data, self.parents = data, parents\n"
        "a = Node(2.0)\nb = Node(3.0, parents=(a,))\nimport copy\nc = Node(4.0, parents=(copy.copy(a),))")
    ns = RemoteGlobals(remote, {"read_path": read_path})
    exec("a.data = 5.0\nthrough_b = read_path(b, 'parents', 0, 'data')\nthrough_c = read_path(c, 'parents', 0, 'data')",
         ns)
    assert ns["through_b"] == 5.0 and ns["through_c"] == 2.0


# -- the wire: bounded in size, depth, count and time ----------------------------------------------
def test_subclasses_of_plain_types_arrive_as_the_plain_value():
    import collections
    import fractions

    Pair = collections.namedtuple("Pair", "a b")
    back = wire.decode(wire.encode([Pair(1, 2.5), collections.OrderedDict(k=np.ones(2)), fractions.Fraction(1, 4),
                                    np.float64, np.dtype("float32"), torch.Size([2, 3]), torch.float64], _no_refs),
                       _no_refs)
    assert back[0] == (1, 2.5) and type(back[0]) is tuple
    assert type(back[1]) is dict and back[1]["k"].tolist() == [1.0, 1.0]
    assert back[2] == 0.25 and type(back[2]) is float
    assert back[3] is np.float64 and back[4] == np.dtype("float32")
    assert back[5] == (2, 3) and back[6] is torch.float64


def test_always_equal_numbers_arrive_as_their_value_and_are_noticed():
    class Anything(float):
        def __eq__(self, other):
            return True

        __hash__ = float.__hash__

    seen = []
    back = wire.decode(wire.encode([Anything(0.0)], _no_refs, coerced=seen.append), _no_refs)
    assert back == [0.0] and type(back[0]) is float and not (back[0] == 1.0)
    assert len(seen) == 1


def test_meta_and_half_precision_tensors_travel_by_value():
    meta = wire.decode(wire.encode(torch.empty(3, 4, device="meta"), _no_refs), _no_refs)
    assert meta.device.type == "meta" and meta.shape == (3, 4)
    half = wire.decode(wire.encode(torch.ones(2, dtype=torch.bfloat16), _no_refs), _no_refs)
    assert half.dtype == torch.bfloat16 and half.tolist() == [1.0, 1.0]


def test_torch_generators_travel_as_a_copy_of_their_state():
    g = torch.Generator().manual_seed(5)
    copy = wire.decode(wire.encode(g, _no_refs), _no_refs)
    assert isinstance(copy, torch.Generator) and copy is not g
    assert torch.equal(torch.randint(0, 1000, (8,), generator=copy), torch.randint(0, 1000, (8,), generator=g))
    with pytest.raises(wire.WireError, match="random generator"):
        wire.decode({"__torchgen__": wire.encode(np.zeros(3, dtype=np.float64), _no_refs)}, _no_refs)
    with pytest.raises(wire.WireError, match="random generator"):
        wire.decode({"__torchgen__": wire.encode(np.zeros(7, dtype=np.uint8), _no_refs)}, _no_refs)


def test_large_arrays_go_by_reference_once_the_budget_is_spent():
    refs = []
    big = np.zeros(wire.ARRAY_BUDGET // 8 // 2 + 1)  # over half the budget each
    encoded = wire.encode([big, big, big], lambda o: refs.append(o) or {"__ref__": len(refs)})
    assert "__nd__" in encoded[0] and encoded[1] == {"__ref__": 1} and encoded[2] == {"__ref__": 2}


def test_hostile_shapes_are_refused_before_they_cost_memory():
    import threading

    def delivered(payload: bytes, **kwargs):
        a, b = socket.socketpair()
        threading.Thread(target=a.sendall, args=(wire._HEADER.pack(len(payload)) + payload,), daemon=True).start()
        return wire.recv(b, **kwargs)

    with pytest.raises(wire.WireError, match="lists and dicts|too deep"):
        delivered(("[" * 100_000 + "]" * 100_000).encode())
    with pytest.raises(wire.WireError, match="lists and dicts"):
        delivered(("[" + ",".join(["[]"] * 300_000) + "]").encode())
    with pytest.raises(wire.WireError, match="too deep"):
        nested = 1
        for _ in range(wire.MAX_DEPTH + 5):
            nested = [nested]
        wire.decode(nested, _no_refs)
    a, b = socket.socketpair()
    a.sendall(wire._HEADER.pack(wire.MAX_REPLY + 1))
    with pytest.raises(wire.WireError):
        wire.recv(b, limit=wire.MAX_REPLY)


def test_a_peer_that_trickles_bytes_cannot_hold_the_reader_past_its_deadline():
    import threading
    import time

    a, b = socket.socketpair()
    stop = threading.Event()

    def trickle():
        a.sendall(wire._HEADER.pack(1000))
        while not stop.is_set():
            try:
                a.sendall(b" ")
            except OSError:
                return
            time.sleep(0.05)

    threading.Thread(target=trickle, daemon=True).start()
    began = time.monotonic()
    with pytest.raises(wire.WireTimeout):
        wire.recv(b, deadline=time.monotonic() + 1.0)
    stop.set()
    assert time.monotonic() - began < 2.0


# -- what a cell is: decided by the course ---------------------------------------------------------
def _course_and_student():
    import types

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    def cell(gid, src, kind="code", **meta):
        maker = new_code_cell if kind == "code" else new_markdown_cell
        return maker(src, metadata={"nbgrader": {"grade_id": gid, **meta}})

    source = new_notebook(cells=[new_markdown_cell("intro"), cell("setup", "from checks import *", locked=True),
                                 cell("ans", "answer", solution=True),
                                 cell("test_ans", "check(ans)", grade=True, locked=True, points=2)])
    known = {"setup": types.SimpleNamespace(source="from checks import *", locked=True, cell_type="code"),
             "ans": types.SimpleNamespace(source="answer", locked=False, cell_type="code"),
             "test_ans": types.SimpleNamespace(source="check(ans)", locked=True, cell_type="code")}
    course = boundary.course_cells(source, known, {"test_ans": 2.0}, {"ans"})
    return course, cell


def _plan(student_cells, course):
    import json

    notes = []
    raw = json.loads(json.dumps([dict(c) for c in student_cells]))
    planned = boundary.plan_cells(raw, course, notes, without_hidden_tests)
    return [(p.role, p.cell.cell_type, p.cell.source) for p in planned], notes


def test_course_cells_stand_where_the_course_puts_them_whatever_the_submission_says():
    from nbformat.v4 import new_code_cell, new_markdown_cell

    course, cell = _course_and_student()
    want = [("setup", "code", "from checks import *"), ("answer", "code", "mine"), ("test", "code", "check(ans)")]
    # The set-up cell dragged below the last test, with the student's own helpers after it.
    moved, notes = _plan([cell("ans", "mine", solution=True), cell("test_ans", "check(ans)", grade=True),
                          cell("setup", "from checks import *"), new_code_cell("def check(x): pass")], course)
    assert moved == [*want[:1], ("student", "code", "def check(x): pass"), *want[1:]]
    assert any("moved" in n for n in notes)
    # Turned into markdown, or a markdown copy with the same grade id put first: the original runs, once.
    for student in ([cell("setup", "x", kind="markdown"), cell("ans", "mine"), cell("test_ans", "check(ans)")],
                    [cell("setup", "fake", kind="markdown"), cell("setup", "from checks import *"),
                     cell("ans", "mine"), cell("test_ans", "check(ans)")]):
        planned, notes = _plan(student, course)
        assert planned == want, planned
    # A test cell marked as an answer, or retyped to raw: still the course's test.
    for meta in ({"solution": True, "grade": False}, {"grade": True, "solution": True}):
        planned, notes = _plan([cell("setup", "from checks import *"), cell("ans", "mine"),
                                cell("test_ans", "print('all good')", **meta)], course)
        assert planned == want and any("metadata" in n or "edited" in n for n in notes)
    raw_test = cell("test_ans", "pass")
    raw_test["cell_type"] = "raw"
    raw_test.pop("outputs"), raw_test.pop("execution_count")
    planned, notes = _plan([cell("setup", "from checks import *"), cell("ans", "mine"), raw_test], course)
    assert planned == want and any("turned into raw" in n for n in notes)
    # A grade id that is not a string, and a markdown answer, are read without a grader error.
    odd = new_markdown_cell("mine", metadata={"nbgrader": {"grade_id": ["ans"]}})
    planned, _ = _plan([cell("setup", "from checks import *"), odd, new_markdown_cell("notes")], course)
    assert ("answer", "code", "mine") not in planned and planned[0] == want[0]


def test_deleted_cells_are_put_back_and_duplicates_run_once():
    course, cell = _course_and_student()
    planned, notes = _plan([cell("ans", "mine"), cell("ans", "mine again"), cell("test_ans", "check(ans)"),
                            cell("test_ans", "check(ans)")], course)
    assert planned == [("setup", "code", "from checks import *"), ("answer", "code", "mine"),
                       ("student", "code", "mine again"), ("test", "code", "check(ans)")]
    assert any("deleted cell setup" in n for n in notes) and any("duplicated cell test_ans" in n for n in notes)


def test_submissions_that_are_not_notebooks_are_refused_with_the_reason(tmp_path):
    import os

    (tmp_path / "real.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "1"}, 5]}')
    assert boundary.read_submission(tmp_path / "real.ipynb") == [{"cell_type": "code", "source": "1"}]
    (tmp_path / "link.ipynb").symlink_to(tmp_path / "real.ipynb")
    os.mkfifo(tmp_path / "fifo.ipynb")
    (tmp_path / "deep.ipynb").write_text("[" * 100_000 + "]" * 100_000)
    for name, phrase in [("link.ipynb", "links are not followed"), ("fifo.ipynb", "not a regular file"),
                         ("deep.ipynb", "not JSON")]:
        with pytest.raises(boundary.NotGradable, match=phrase):
            boundary.read_submission(tmp_path / name)


def test_only_regular_files_of_the_submission_reach_the_sandbox(tmp_path):
    import os

    src, dst = tmp_path / "sub", tmp_path / "work"
    src.mkdir(), dst.mkdir()
    (src / "nb.ipynb").write_text("{}")
    (src / "data.csv").write_text("1,2")
    (tmp_path / "secret").write_text("gradebook")
    (src / "gradebook.db").symlink_to(tmp_path / "secret")
    os.mkfifo(src / "pipe.ipynb")
    (src / "folder").mkdir()
    notes = boundary.copy_submission_files(src, dst, None)
    assert sorted(p.name for p in dst.iterdir()) == ["data.csv", "nb.ipynb"]
    assert len(notes) == 3 and all("not a regular file" in n for n in notes)


def test_sandbox_environment_passes_nothing_of_the_graders(monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_TOKEN", "secret")
    env = boundary.sandbox_environment(200, None)
    assert "INSTRUCTOR_TOKEN" not in env and set(env) <= set(boundary.ENVIRONMENT) | {"GRADER_MAX_CELL_OUTPUT"}


def test_csv_fields_never_become_formulas():
    assert _safe_cell('=HYPERLINK("http://x", "click")') == '\'=HYPERLINK("http://x", "click")'
    assert _safe_cell("+1") == "'+1" and _safe_cell("ok") == "ok"
    assert _safe_cell("bad \udcff surrogate") == "bad ? surrogate"


def test_flags_are_bounded_and_deduplicated():
    flags = []
    for i in range(60_000):
        boundary.add_flag(flags, f"flag {i % 100} " + "x" * 500)
    assert len(flags) == boundary.KEEP["flags per submission"]
    assert all(len(f) <= boundary.KEEP["characters per flag"] for f in flags)


@pytest.mark.skipif(os.getuid() != 0, reason="user ids are leased only when the grader runs as root")
def test_grading_runs_side_by_side_lease_different_user_ids(tmp_path):
    from sandbox.trusted import UidLease

    first, second = UidLease(tmp_path), UidLease(tmp_path)
    assert first.uid != second.uid
    first.release()
    third = UidLease(tmp_path)
    assert third.uid == first.uid
    second.release(), third.release()


def test_the_scan_never_imports_or_runs_what_a_submission_names():
    """A module named only in a submission (``numpy.f2py.__main__`` raises SystemExit when imported) is never
    imported in the grader's process: the scan reads only what the grader has loaded itself."""
    before = set(sys.modules)
    for source in ("import numpy\nif False:\n    numpy.f2py.__main__.x = 1",
                   "import IPython\nif False:\n    IPython.__main__.x = 1",
                   "import numpy\nnumpy.this_does_not_exist.either = 2"):
        assert scan_for_tampering(source) == []
    new = {m for m in set(sys.modules) - before if not m.startswith(("goingdeeper", "torch", "numpy."))}
    assert "numpy.f2py.__main__" not in sys.modules and "IPython.__main__" not in sys.modules, new


class SlowSandbox(FakeSandbox):
    """A runner whose every answer comes too late: the test's time ran out."""

    def request(self, msg, timeout, what):
        from sandbox.trusted import CellTimeout

        self.sent.append(msg)
        raise CellTimeout(f"{what} ran past the time limit")


def test_protocol_lookups_never_see_the_graders_timeouts():
    """pytest reads __tracebackhide__ from a frame's globals; hasattr and getattr with a default probe
    attributes. Under load the remote may time out: those lookups see a missing name, and the timeout is
    kept for the session to report as the cell's result."""
    from sandbox.trusted import CellTimeout

    remote = Remote(SlowSandbox({}))
    ns = RemoteGlobals(remote, {"helper": 5})
    with pytest.raises(KeyError):
        ns["__tracebackhide__"]
    assert remote.sandbox.sent == []  # dunder names are never the student's: not even asked
    with pytest.raises(KeyError):
        ns["student_function"]
    assert isinstance(remote.take_failure(), CellTimeout) and remote.take_failure() is None
    node = Proxy(remote, 1, "m.Node", False)
    assert not hasattr(node, "data") and getattr(node, "data", 7) == 7
    assert isinstance(remote.take_failure(), CellTimeout)


def test_a_latin1_notebook_is_read_and_the_note_says_so(tmp_path):
    text = '{"cells": [{"cell_type": "code", "source": "name = \'Jos\u00e9\'"}], "metadata": {}}'
    (tmp_path / "latin.ipynb").write_bytes(text.encode("latin-1"))
    notes: list[str] = []
    cells = boundary.read_submission(tmp_path / "latin.ipynb", notes)
    assert cells[0]["source"] == "name = 'Jos\u00e9'"
    assert len(notes) == 1 and "not UTF-8" in notes[0] and "Windows-1252" in notes[0]
    (tmp_path / "utf8.ipynb").write_bytes(text.encode("utf-8"))
    assert boundary.read_submission(tmp_path / "utf8.ipynb", notes) == cells and len(notes) == 1
    (tmp_path / "bom.ipynb").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a Windows editor's mark
    assert boundary.read_submission(tmp_path / "bom.ipynb", notes) == cells and len(notes) == 1
    (tmp_path / "cp1252.ipynb").write_bytes(text.replace("Jos\u00e9", "\u201cquoted\u201d").encode("cp1252"))
    assert "\u201cquoted\u201d" in boundary.read_submission(tmp_path / "cp1252.ipynb", notes)[0]["source"]
    assert "Windows-1252" in notes[-1]
