"""The grading command's parts on their own: the wire codec, proxies, the tamper scan, the CLI's errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from goingdeeper.scratch import ROOT

sys.path.insert(0, str(ROOT / "autograder"))
from grade import prepare, scan_for_tampering, without_hidden_tests  # noqa: E402
from report import message_pattern  # noqa: E402
from sandbox import wire  # noqa: E402
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


def test_other_objects_and_float_subclasses_travel_as_references():
    class Sneaky(float):
        def __eq__(self, other):
            return True

    refs = []
    encoded = wire.encode([Sneaky(1.0), object(), np.array(["a"])], lambda o: refs.append(o) or {"__ref__": len(refs)})
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
                     "code replaces sys.modules[...]", "code replaces attributes of numpy with setattr",
                     "code installs a trace function"]
    assert scan_for_tampering("import numpy as np\nx = np.zeros(3)\nx[0] = 1\nclass A:\n    pass\nA.b = 1\n") == []
    assert scan_for_tampering("def broken(:") == []


def test_hidden_tests_are_cut_like_nbgrader_cuts_them():
    src = '"""doc"""\ncheck()\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\n'
    assert without_hidden_tests(src) == '"""doc"""\ncheck()\n'


def test_report_groups_messages_that_differ_only_in_numbers():
    a = message_pattern("dL_dx is wrong: expected -0.99, got 0.54 (off by 1.53).")
    b = message_pattern("dL_dx is wrong: expected 0.12, got 3 (off by 2.9e-1).")
    assert a == b == "dL_dx is wrong: expected #, got # (off by #)."


def test_prepare_restores_locked_cells_and_puts_deleted_tests_back():
    import types

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    def cell(gid, src, **meta):
        return new_code_cell(src, metadata={"nbgrader": {"grade_id": gid, **meta}})

    source = new_notebook(cells=[cell("setup", "import x", locked=True), cell("ans", "answer", solution=True),
                                 cell("test_ans", "check()", grade=True, locked=True)])
    student = new_notebook(cells=[cell("setup", "import evil", locked=True), cell("ans", "mine", solution=True),
                                  new_code_cell("scratch work")])
    cells = {"setup": types.SimpleNamespace(source="import x", locked=True),
             "ans": types.SimpleNamespace(source="answer", locked=False),
             "test_ans": types.SimpleNamespace(source="check()", locked=True)}
    notes = []
    nb = prepare(nbformat.from_dict(student), source, cells, {"test_ans": 1.0}, notes)
    assert [c.source for c in nb.cells] == ["import x", "mine", "check()", "scratch work"]
    assert notes == ["deleted cell test_ans (put back and graded)"]


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
    from goingdeeper.scratch import ScratchCourse

    course = ScratchCourse(tmp_path / "c", course_config=True)
    course.add_source("01_computational_graphs")
    course.generate("01_computational_graphs")
    (course.submitted_dir).mkdir(parents=True)
    run = _grade("99_nothing", "--course", str(course.root))
    assert run.returncode == 2 and "'99_nothing' is not in the gradebook" in run.stderr
    run = _grade("01_computational_graphs", "--course", str(course.root))
    assert run.returncode == 1 and "no submissions" in run.stderr


def test_a_real_sandbox_round_trip(tmp_path):
    """Against a real runner: in-place changes to arrays come back, lent objects work, private ones do not."""
    import time

    from sandbox.trusted import CellTimeout, Limits, Sandbox, bwrap_available

    sandbox = Sandbox(tmp_path / "scratch", Limits(), use_bwrap=bwrap_available())
    sandbox.start()
    try:
        reply = sandbox.request({"op": "run", "source": (
            "import numpy as np\n"
            "def nudge(x):\n    x[0] += 1\n    return 'done'\n"
            "def draw(rng, n):\n    return rng.normal(0, 1, size=n)\n"
            "def private(rng):\n    return rng._bit_generator\n"
            "def spin():\n    while True:\n        pass\n")}, 60, "defining")
        assert reply["ok"], reply
        remote = Remote(sandbox)
        remote.deadline = time.monotonic() + 60
        ns = RemoteGlobals(remote, {"np": np})
        exec("x = np.zeros(3)\nr = nudge(x)\nd = draw(np.random.default_rng(0), 4)", ns)
        assert ns["r"] == "done" and ns["x"].tolist() == [1.0, 0.0, 0.0]
        assert np.array_equal(ns["d"], np.random.default_rng(0).normal(0, 1, size=4))
        with pytest.raises(AttributeError):
            exec("private(np.random.default_rng(0))", ns)
        remote.deadline = time.monotonic() + 2
        with pytest.raises(CellTimeout):
            exec("spin()", ns)
        remote.deadline = time.monotonic() + 10
        exec("r2 = nudge(np.ones(2))", ns)  # the process survived the interrupt
        assert ns["r2"] == "done"
    finally:
        sandbox.kill()
