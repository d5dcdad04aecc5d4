"""Grading one submission: its cells run in the sandbox, its tests run here.

:class:`Session` takes the planned notebook (``boundary.plan_cells``), runs
every code cell of the student's in the sandboxed runner and every test cell
in this process against proxies, and fills a :class:`Result`. The static scan
for tampering (:func:`scan_for_tampering`) reads the student's cells before
they run.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import shutil
import signal
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goingdeeper import ownwork

from . import boundary
from .boundary import ANSWER, STUDENT, TEST, PlannedCell
from .trusted import CellTimeout, Limits, Remote, RemoteGlobals, RunnerDied, Sandbox, SandboxSetupError

MAX_RESTARTS = 3


@dataclass
class CellResult:
    grade_id: str
    points: float
    max_points: float
    passed: bool
    message: str = ""


# A row without a score: the submission could not be graded (its own fault: the reason says why), there was
# none, it was not found under the notebook's name (and not graded), or the grader itself failed (never
# recorded as the student's: the gradebook keeps what it had).
NOT_GRADED = ("ungradable", "missing", "misnamed", "grader error")


@dataclass
class Result:
    student: str
    assignment: str
    notebook: str
    status: str = "graded"  # graded | problems | ungradable | missing | misnamed | grader error (see NOT_GRADED)
    reason: str = ""
    submitted_as: str = ""  # the file that was graded, when its name is not the assignment's notebook
    cells: list[CellResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # attempts to tamper with grading
    problems: list[str] = field(default_factory=list)  # timeouts and crashes while grading
    notes: list[str] = field(default_factory=list)  # moved, edited, deleted or duplicated cells; files left out
    seconds: float = 0.0
    sandbox: str = ""
    answers: str = ""  # a digest of the student's answer and own cells: a manual override survives while it holds
    timestamp: str = ""  # when the student submitted: the exchange's timestamp.txt (nbgrader collect copies it)
    late: str = ""  # how late, and the penalty (filled in from the gradebook for the reports)
    penalty: float = 0.0  # points the late penalty took (the gradebook's)
    overrides: list[str] = field(default_factory=list)  # cells an instructor graded by hand (from the gradebook)

    @property
    def score(self) -> float | None:
        return None if self.status in NOT_GRADED else sum(c.points for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.cells)

    def note(self, text: str) -> None:
        text = boundary.keep_text(text, 300)
        if text not in self.notes and len(self.notes) < boundary.KEEP["notes per submission"]:
            self.notes.append(text)


# -- reading the student's code for tampering ------------------------------------------------
WATCHED_MODULES = ("numpy", "torch", "math", "builtins", "goingdeeper", "IPython", "sys", "gc", "inspect",
                   "operator", "functools", "warnings", "socket", "os")
SUSPICIOUS_CALLS = {"set_custom_exc": "installs an IPython exception handler",
                    "settrace": "installs a trace function", "setprofile": "installs a profile function",
                    "get_objects": "walks the interpreter's objects (gc.get_objects)",
                    "get_referrers": "walks the interpreter's objects (gc.get_referrers)",
                    "_getframe": "reaches the grader's runner through stack frames (sys._getframe)",
                    "currentframe": "reaches the grader's runner through stack frames (inspect.currentframe)",
                    "stack": None, "fromfd": "opens the grader's connection (socket.fromfd)"}
FRAME_ATTRIBUTES = {"f_back", "f_globals", "f_locals", "tb_frame", "gi_frame", "cr_frame"}


# The course's own modules, loaded once by the scan (a fixed list: never a name a submission chose), so that
# what it finds does not depend on what the grading process happened to import before.
COURSE_MODULES = ("numpy", "torch", "torch.nn", "torch.nn.functional", "goingdeeper", "goingdeeper.checks",
                  "goingdeeper.scalar", "goingdeeper.fc", "goingdeeper.bn", "goingdeeper.resnet", "goingdeeper.models",
                  "goingdeeper.degradation", "goingdeeper.cifar", "goingdeeper.train", "goingdeeper.plotting",
                  "goingdeeper.grading", "goingdeeper.ownwork")
_loaded = False


def _load_course_modules() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in COURSE_MODULES:
            with contextlib.suppress(Exception):
                __import__(module)


def _resolve_dotted(name: str) -> Any:
    """The object ``name`` ('numpy.linalg.norm') stands for among the modules the grader has loaded, or None.

    Nothing is imported and no code runs: only modules already in ``sys.modules`` are read, and their
    attributes through ``inspect.getattr_static`` (no module ``__getattr__``, no descriptors). A name
    the submission makes up (``numpy.f2py.__main__``) is not looked for by importing it, which would run
    that module here, in the grader's own process.
    """
    parts = name.split(".")
    if parts[0] not in WATCHED_MODULES:
        return None
    _load_course_modules()
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for part in parts[cut:]:
            try:
                obj = inspect.getattr_static(obj, part)
            except AttributeError:
                return None
        return obj
    return None


def _replaces_code(name: str) -> bool:
    """Does assigning to ``name`` replace a function, class or module (not a setting such as a flag)?"""
    current = _resolve_dotted(name)
    return callable(current) or isinstance(current, (types.ModuleType, classmethod, staticmethod, property))


def scan_for_tampering(source: str) -> list[str]:
    """Flags for code that changes library or grader objects, found by reading the cell (not running it).

    A hint for the instructor, not a proof: code can hide what it does from any reader. What
    protects the grades is that tests run outside the student's process.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    aliases: dict[str, str] = {}
    flags: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "__main__":
                    flags.append("code imports __main__ (the grader's runner)")
                if a.name.split(".")[0] in WATCHED_MODULES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name == "ctypes":
                    aliases["ctypes"] = "ctypes"
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in WATCHED_MODULES:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module in ("ctypes", "__main__"):
                aliases[node.module] = node.module

    def dotted(node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            return ".".join([aliases[node.id], *reversed(parts)])
        return None

    def namespace_of(node) -> str | None:
        """For ``vars(m)``, ``m.__dict__``, ``sys.modules[...]``: the module whose namespace it is."""
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "vars" and node.args:
            return dotted(node.args[0])
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            return dotted(node.value)
        if dotted(node) == "sys.modules":
            return "sys.modules"
        return None

    for node in ast.walk(tree):
        targets: list[Any] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            name = dotted(target) if isinstance(target, ast.Attribute) else None
            if name and _replaces_code(name):
                flags.append(f"code replaces {name}")
            if isinstance(target, ast.Subscript):
                owner = namespace_of(target.value)
                if owner:
                    flags.append(f"code replaces entries of {owner}'s namespace")
        if isinstance(node, ast.Call):
            func = node.func
            attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if attr in SUSPICIOUS_CALLS and SUSPICIOUS_CALLS[attr]:
                flags.append(f"code {SUSPICIOUS_CALLS[attr]}")
            if attr == "setattr" and node.args and (dotted(node.args[0]) or namespace_of(node.args[0])):
                flags.append(f"code replaces attributes of {dotted(node.args[0]) or 'a module'} with setattr")
            if attr in ("update", "__setitem__", "setdefault") and isinstance(func, ast.Attribute) and \
                    namespace_of(func.value):
                flags.append(f"code replaces entries of {namespace_of(func.value)}'s namespace")
            if attr == "socket" and any(k.arg == "fileno" for k in node.keywords):
                flags.append("code opens the grader's connection (socket with fileno)")
        if isinstance(node, ast.Attribute) and node.attr in FRAME_ATTRIBUTES:
            flags.append(f"code reaches the grader's runner through stack frames (.{node.attr})")
        if isinstance(node, ast.Subscript) and dotted(node.value) == "sys.modules":
            key = node.slice
            if isinstance(key, ast.Constant) and key.value == "__main__":
                flags.append("code reaches sys.modules['__main__'] (the grader's runner)")
    if "ctypes" in aliases:
        flags.append("code imports ctypes")
    return list(dict.fromkeys(flags))


# -- the time limit of the grader's own work on a test ----------------------------------------------
class _Alarm:
    """Raise CellTimeout in this (the worker's main) thread when a test's time is up.

    Waiting on the runner has its own deadline; this bounds what the test does here: decoding
    and comparing the student's data, computing expected values. While a message is on its
    way (``busy()``), the alarm waits for the wire's own deadline, so that no message is cut.
    """

    def __init__(self, busy) -> None:
        self.armed = False
        self.busy = busy

    def _fire(self, signum, frame) -> None:  # noqa: ARG002
        if not self.armed:
            return
        if self.busy():
            signal.setitimer(signal.ITIMER_REAL, 0.25)
            return
        self.armed = False
        raise CellTimeout("the test ran past its time limit")

    @contextlib.contextmanager
    def limit(self, seconds: float):
        if not hasattr(signal, "setitimer"):
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._fire)
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
        try:
            yield
        finally:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _stream(name: str, text: str):
    from nbformat.v4 import new_output

    return new_output("stream", name=name, text=boundary.clean_text(text))


def _error(ename: str, evalue: str, tb: list[str] | None = None):
    from nbformat.v4 import new_output

    ename, evalue = boundary.clean_text(ename), boundary.clean_text(evalue)
    return new_output("error", ename=ename, evalue=evalue,
                      traceback=[boundary.clean_text(t) for t in tb] if tb else [f"{ename}: {evalue}"])


class Session:
    """Grades one planned notebook: runs its cells in the sandbox and its tests here."""

    def __init__(self, result: Result, limits: Limits, log, *, uid: int | None, use_bwrap: bool,
                 data: Path | None, submission: Path) -> None:
        self.result, self.limits, self.log = result, limits, log
        self.start = time.monotonic()
        self.sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="gd-grade-")), limits, uid=uid, use_bwrap=use_bwrap,
                               data=data)
        for note in boundary.copy_submission_files(submission, self.sandbox.scratch / "work", uid):
            result.note(note)
        self.remote = Remote(self.sandbox)
        self.executed: list[str] = []  # sources of runner cells that ran, for replays
        self.history: list[str] = []  # every cell sent to the runner, as IPython's input history would hold them
        self.restarts = 0
        self.alarm = _Alarm(lambda: self.sandbox.in_request > 0)

    def remaining(self) -> float:
        return self.limits.total_timeout - (time.monotonic() - self.start)

    def cell_budget(self) -> float:
        return max(0.0, min(self.limits.cell_timeout, self.remaining()))

    def _deadline(self) -> float:
        return time.monotonic() + max(self.remaining(), 0.01)

    def restart(self, why: str) -> bool:
        self.sandbox.kill()
        self.remote.reset()
        if self.restarts >= MAX_RESTARTS or self.remaining() <= 0:
            return False
        self.restarts += 1
        self.log(f"restarting the notebook's process ({why}); replaying {len(self.executed)} cells")
        try:
            self.sandbox.start(self._deadline())
            for source in list(self.executed):
                reply = self.sandbox.request({"op": "run", "source": source}, self.cell_budget(), "replaying a cell")
                if reply.get("timed_out"):
                    self.executed.remove(source)
        except (RunnerDied, TimeoutError, SandboxSetupError) as exc:  # the submission's code has run by now
            self.log(f"replay failed: {exc}")
            return self.restart(str(exc))
        return True

    def ensure_running(self) -> None:
        if self.sandbox.sock is None and not self.restart("the notebook's process is not running"):
            raise RunnerDied("the notebook's process kept dying, so grading stopped")

    def run_student_cell(self, cell) -> list[dict]:
        self.ensure_running()
        budget = self.cell_budget()
        self.history.append(cell.source)
        try:
            reply = self.sandbox.request({"op": "run", "source": cell.source}, budget, "running this cell")
        except RunnerDied as exc:
            self.result.problems.append(boundary.keep_text(f"a cell ended the notebook's process: {exc}", 300))
            if not self.restart(str(exc)):
                raise
            return [_error("GraderError", f"This cell could not run: {exc}. It was left out.")]
        cap = self.limits.output_kb * 1024
        outputs = []
        for name in ("stdout", "stderr"):
            if reply.get(name):
                outputs.append(_stream(name, boundary.keep_output(reply[name], cap)))
        if reply.get("timed_out"):
            self.result.problems.append(f"a cell ran past the {budget:.0f} s limit and was interrupted")
            outputs.append(_error("TimeoutError", f"This cell ran past the {budget:.0f} s limit and was interrupted."))
            return outputs
        error = reply.get("error")
        if isinstance(error, dict):
            tb = boundary.keep_text(error.get("traceback", ""), 8000).splitlines()[-30:]
            outputs.append(_error(boundary.keep_text(error.get("ename"), 100),
                                  boundary.keep_text(error.get("evalue"), 2000), tb))
        self.executed.append(cell.source)
        self.collect_tamper_report()
        return outputs

    def collect_tamper_report(self) -> None:
        try:
            report = self.sandbox.request({"op": "tamper"}, 10, "asking for the tamper report").get("value") or []
        except (RunnerDied, TimeoutError):
            return
        for flag in report[:boundary.KEEP["flags per submission"]] if isinstance(report, list) else []:
            boundary.add_flag(self.result.flags, flag)

    def run_test_cell(self, cell, namespace: RemoteGlobals, gid: str, points: float) -> tuple[list[dict], CellResult]:
        self.ensure_running()
        budget = self.cell_budget()
        self.remote.deadline = time.monotonic() + budget
        self.remote.attributes.clear()  # the student's cells ran since the last test
        self.remote.stderr = []
        out = io.StringIO()
        passed, message, ename = False, "", ""
        student_warnings: list[str] = []
        try:
            code = compile(cell.source, f"<test cell {gid}>", "exec")
            self.remote.take_failure()
            with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught, \
                    self.alarm.limit(budget + 1.0):
                warnings.simplefilter("always")
                try:
                    exec(code, namespace)  # noqa: S102 - our own test code
                finally:
                    # A name the test looked up could not be fetched (time out, process ended): that, not
                    # the NameError (or a pass) the lookup turned into, is this cell's result.
                    failure = self.remote.take_failure()
                    if failure is not None:
                        raise failure
            passed = True
            student_warnings = [f"{w.category.__name__}: {w.message}" for w in caught if w.filename == "<student's code>"]
        except RunnerDied as exc:
            ename, message = "GraderError", f"the notebook's process ended during this test: {exc}"
            self.result.problems.append(boundary.keep_text(f"{gid}: {exc}", 300))
            if not self.restart(str(exc)):
                raise
        except (CellTimeout, TimeoutError) as exc:
            ename, message = "TimeoutError", f"{exc} (limit {budget:.0f} s)"
            self.result.problems.append(f"{gid}: the test ran past its time limit")
        except RecursionError:
            ename, message = "RecursionError", "maximum recursion depth exceeded"
        except NotImplementedError as exc:
            ename = "NotImplementedError"
            message = str(exc) or "something this test uses is not implemented yet (raise NotImplementedError())"
        except Exception as exc:  # noqa: BLE001 - every failure becomes feedback
            ename, message = type(exc).__name__, str(exc)
        stderr = "".join(self.remote.stderr) + "".join(f"<student's code>: {w}\n" for w in student_warnings)
        cap = self.limits.output_kb * 1024
        outputs = [_stream("stdout", boundary.keep_output(out.getvalue(), cap))] if out.getvalue() else []
        if stderr:  # as nbgrader scores it: a test cell that writes to stderr earns nothing
            outputs.append(_stream("stderr", boundary.keep_output(stderr, cap)))
            if passed:
                passed, ename = False, "StderrOutput"
                message = "your code wrote to stderr (a warning or an error message) while this test ran"
        if not passed:
            outputs.append(_error(ename, message))
        message = boundary.keep_text(f"{ename}: {message}", 2000) if not passed else ""
        return outputs, CellResult(gid, points if passed else 0.0, points, passed, message)

    def check_setup_names(self, trusted: dict) -> None:
        for name, value in list(trusted.items()):
            if name.startswith("_") or not (hasattr(value, "__module__") or hasattr(value, "__name__")):
                continue
            try:
                reply = self.sandbox.request({"op": "describe", "name": name}, 10, "checking names")
            except (RunnerDied, TimeoutError):
                return
            described = reply.get("value")
            mine = [str(getattr(value, "__module__", "")), str(getattr(value, "__qualname__", ""))]
            if described is None:
                self.result.note(f"the notebook deleted {name}, a name the tests use (the tests used the original)")
            elif not isinstance(value, types.ModuleType) and isinstance(described, list) and described[:2] != mine:
                if len(described) > 2 and described[2] is True and callable(value):
                    boundary.add_flag(self.result.flags, f"redefined {name}, which the tests use")
                else:
                    self.result.note(f"the notebook reuses the name {name}, which the tests use (they used the "
                                     "original)")

    def grade(self, planned: list[PlannedCell], setup_source: str) -> None:
        self.sandbox.start(self._deadline())
        trusted = boundary.trusted_namespace(setup_source)
        namespace = RemoteGlobals(self.remote, trusted)
        # The test cells' own_work reads the answers from the submission's cells (never from the student's
        # process): the course's set-up cell and every cell sent to the runner, in order.
        ownwork.GRADER_HOOK = ownwork.GraderHook(lambda: [setup_source, *self.history],
                                                 lambda text: boundary.add_flag(self.result.flags, text))
        try:
            self._grade_cells(planned, namespace)
        finally:
            ownwork.GRADER_HOOK = None
        self.check_setup_names(trusted)
        self.collect_tamper_report()

    def _grade_cells(self, planned: list[PlannedCell], namespace: RemoteGlobals) -> None:
        for item in planned:
            cell = item.cell
            if cell.cell_type != "code":
                continue
            if self.remaining() <= 0:
                raise TimeoutError(f"the submission used up its total time of {self.limits.total_timeout:.0f} s")
            if item.role == TEST:
                calls, began = self.remote.calls, time.monotonic()
                cell.outputs, res = self.run_test_cell(cell, namespace, item.grade_id, item.points)
                self.result.cells.append(res)
                self.log(f"{item.grade_id}: {'passed' if res.passed else res.message[:300]} "
                         f"({self.remote.calls - calls} requests, {time.monotonic() - began:.2f} s)")
            else:
                if item.role in (ANSWER, STUDENT):
                    for flag in scan_for_tampering(cell.source):
                        boundary.add_flag(self.result.flags, flag)
                cell.outputs = self.run_student_cell(cell)
            cell.execution_count = None

    def close(self) -> None:
        self.sandbox.kill()
        shutil.rmtree(self.sandbox.scratch, ignore_errors=True)
