"""Grade submissions in parallel, sandboxed, with tests the student's code cannot reach.

    bash course.sh grade 01_computational_graphs        # or: all
    bash course.sh grade all --workers 2 --submissions path/to/submitted

For every submission (``<submissions>/<student>/<assignment>/*.ipynb``, the
layout nbgrader's ``collect`` and ``zip_collect`` produce), in a pool of
worker processes:

1. the notebook is prepared as nbgrader prepares it: locked and test cells are
   restored from the gradebook, deleted ones are put back;
2. the student's cells run in a sandbox (``sandbox/trusted.py``) under time,
   memory, process and output limits, on a scratch copy of the submission;
3. each test cell runs in the grader's own process, against proxies of the
   student's objects: numbers, arrays and strings cross over as data, and all
   comparisons happen where the student's code cannot reach them;
4. scores go into the course gradebook (so ``nbgrader generate_feedback``,
   ``nbgrader export`` and the formgrader work as usual), and the autograded
   notebook, with the grader's verdicts as the test cells' outputs, into
   ``autograder/autograded/``.

A submission that cannot be graded (its process keeps dying, it uses up its
total time, the file is not a notebook) is reported as such with the reason,
never as a silent 0. Attempts to tamper with the grading (patched numpy,
torch, builtins or our checks; objects that equal anything; redefined check
helpers) are flagged. ``autograder/reports/<assignment>/`` receives
``grades.csv``, ``report.html`` and one log per submission.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sandbox.trusted import (  # noqa: E402
    CellTimeout,
    Limits,
    Remote,
    RemoteGlobals,
    RunnerDied,
    Sandbox,
    bwrap_available,
)

SETUP_ID = "setup"
MAX_RESTARTS = 3


@dataclass
class Task:
    student: str
    assignment: str
    path: str  # the submitted notebook
    source: str  # the instructor's source notebook (for cell order)
    db_url: str
    autograded: str  # folder for the autograded notebook
    log: str
    limits: Limits
    use_bwrap: bool
    hide: list[str]


@dataclass
class CellResult:
    grade_id: str
    points: float
    max_points: float
    passed: bool
    message: str = ""


@dataclass
class Result:
    student: str
    assignment: str
    notebook: str
    status: str = "graded"  # graded | problems | ungradable
    reason: str = ""
    cells: list[CellResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # attempts to tamper with grading
    problems: list[str] = field(default_factory=list)  # timeouts and crashes while grading
    notes: list[str] = field(default_factory=list)  # edited, deleted or duplicated cells
    seconds: float = 0.0
    sandbox: str = ""

    @property
    def score(self) -> float | None:
        return None if self.status == "ungradable" else sum(c.points for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.cells)


# -- preparing the notebook ------------------------------------------------------------
def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def prepare(student_nb, source_nb, source_cells: dict[str, Any], grade_cells: dict[str, float], notes: list[str]):
    """The notebook as it will be graded: nbgrader's rules for locked, test and deleted cells.

    Locked cells and test cells take the gradebook's source; a test or locked
    cell the student deleted is put back after the cell that precedes it in the
    source notebook; a duplicated test cell runs once.
    """
    import nbformat

    cells = []
    seen: set[str] = set()
    for cell in student_nb.cells:
        gid = _nbg(cell).get("grade_id")
        if gid in source_cells and (source_cells[gid].locked or gid in grade_cells):
            if gid in seen:
                notes.append(f"duplicated cell {gid} (graded once)")
                continue
            seen.add(gid)
            original = source_cells[gid]
            if gid in grade_cells and cell.get("source", "").strip() not in (
                original.source.strip(), without_hidden_tests(original.source).strip()):
                notes.append(f"edited test cell {gid} (the original was graded)")
            cell = nbformat.from_dict(cell)
            cell.source = original.source
        elif gid in seen:
            notes.append(f"duplicated cell {gid} (graded once)")
            continue
        elif gid:
            seen.add(gid)
        cells.append(cell)
    order = [_nbg(c).get("grade_id") for c in source_nb.cells]
    for i, gid in enumerate(order):
        if gid is None or gid in seen or gid not in source_cells:
            continue
        if not (source_cells[gid].locked or gid in grade_cells):
            continue
        notes.append(f"deleted cell {gid} (put back and graded)")
        restored = nbformat.from_dict(source_nb.cells[i])
        restored.source = source_cells[gid].source
        before = {g for g in order[:i] if g}
        at = 0
        for k, c in enumerate(cells):
            if _nbg(c).get("grade_id") in before:
                at = k + 1
        cells.insert(at, restored)
        seen.add(gid)
    student_nb.cells = cells
    return student_nb


# -- reading the student's code for tampering ------------------------------------------------
WATCHED_MODULES = ("numpy", "torch", "math", "builtins", "goingdeeper", "IPython", "sys", "gc", "inspect")
SUSPICIOUS_CALLS = {"set_custom_exc": "installs an IPython exception handler",
                    "settrace": "installs a trace function", "setprofile": "installs a profile function",
                    "get_objects": "walks the interpreter's objects (gc.get_objects)",
                    "get_referrers": "walks the interpreter's objects (gc.get_referrers)"}


def scan_for_tampering(source: str) -> list[str]:
    """Flags for code that changes library or grader objects, found by reading the cell (not running it)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in WATCHED_MODULES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in WATCHED_MODULES:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.ImportFrom) and node.module == "ctypes" or (
                isinstance(node, ast.Import) and any(a.name == "ctypes" for a in node.names)):
            aliases["ctypes"] = "ctypes"

    def dotted(node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            return ".".join([aliases[node.id], *reversed(parts)])
        return None

    flags = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            name = dotted(target) if isinstance(target, ast.Attribute) else None
            if isinstance(target, ast.Subscript) and dotted(target.value) in ("sys.modules",):
                name = "sys.modules[...]"
            if name:
                flags.append(f"code replaces {name}")
        if isinstance(node, ast.Call):
            func = node.func
            attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if attr in SUSPICIOUS_CALLS:
                flags.append(f"code {SUSPICIOUS_CALLS[attr]}")
            if attr == "setattr" and node.args and dotted(node.args[0]):
                flags.append(f"code replaces attributes of {dotted(node.args[0])} with setattr")
    if "ctypes" in aliases:
        flags.append("code imports ctypes")
    return flags


# -- grading one submission ------------------------------------------------------------
_WORKER_UID: int | None = None


def _init_worker(counter) -> None:
    global _WORKER_UID
    with counter.get_lock():
        counter.value += 1
        index = counter.value
    if os.getuid() == 0 and shutil.which("setpriv") is not None:
        _WORKER_UID = 61000 + index
    warnings.simplefilter("ignore")
    if "torch" in sys.modules:  # workers run side by side: one thread each
        sys.modules["torch"].set_num_threads(1)


def _stream(name: str, text: str):
    from nbformat.v4 import new_output

    return new_output("stream", name=name, text=text)


def _error(ename: str, evalue: str, tb: list[str] | None = None):
    from nbformat.v4 import new_output

    return new_output("error", ename=ename, evalue=evalue, traceback=tb or [f"{ename}: {evalue}"])


_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", re.S | re.M)


def without_hidden_tests(source: str) -> str:
    """A test cell's source as the release shows it (nbgrader drops the hidden block)."""
    return _HIDDEN.sub("", source)


class Grader:
    """Grades one submission: runs its cells in the sandbox and its tests here."""

    def __init__(self, task: Task, result: Result, log) -> None:
        self.task, self.result, self.log = task, result, log
        self.start = time.monotonic()
        self.sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="gd-grade-")), task.limits, uid=_WORKER_UID,
                               hide=[Path(p) for p in task.hide], use_bwrap=task.use_bwrap)
        submitted = Path(task.path).parent
        for item in submitted.iterdir():  # the scratch copy of the submission
            if item.is_file() and item.stat().st_size < 50 * 1024 * 1024:
                shutil.copy(item, self.sandbox.scratch / "work" / item.name)
        if _WORKER_UID is not None:
            for item in (self.sandbox.scratch / "work").iterdir():
                os.chown(item, _WORKER_UID, _WORKER_UID)
        self.remote = Remote(self.sandbox)
        self.executed: list[str] = []  # sources of runner cells that ran, for replays
        self.restarts = 0

    def remaining(self) -> float:
        return self.task.limits.total_timeout - (time.monotonic() - self.start)

    def cell_budget(self) -> float:
        return max(0.0, min(self.task.limits.cell_timeout, self.remaining()))

    def restart(self, why: str) -> bool:
        self.sandbox.kill()
        self.remote.reset()
        if self.restarts >= MAX_RESTARTS:
            return False
        self.restarts += 1
        self.log(f"restarting the notebook's process ({why}); replaying {len(self.executed)} cells")
        try:
            self.sandbox.start()
            for source in list(self.executed):
                reply = self.sandbox.request({"op": "run", "source": source}, self.cell_budget(), "replaying a cell")
                if reply.get("timed_out"):
                    self.executed.remove(source)
        except RunnerDied as exc:
            self.log(f"replay failed: {exc}")
            return self.restart(str(exc))
        return True

    def ensure_running(self) -> None:
        if self.sandbox.sock is None and not self.restart("the notebook's process is not running"):
            raise RunnerDied("the notebook's process kept dying, so grading stopped")

    def run_student_cell(self, cell) -> list[dict]:
        self.ensure_running()
        budget = self.cell_budget()
        try:
            reply = self.sandbox.request({"op": "run", "source": cell.source}, budget, "running this cell")
        except RunnerDied as exc:
            self.result.problems.append(f"a cell ended the notebook's process: {exc}")
            if not self.restart(str(exc)):
                raise
            return [_error("GraderError", f"This cell could not run: {exc}. It was left out.")]
        outputs = []
        if reply.get("stdout"):
            outputs.append(_stream("stdout", reply["stdout"]))
        if reply.get("stderr"):
            outputs.append(_stream("stderr", reply["stderr"]))
        if reply.get("timed_out"):
            self.result.problems.append(f"a cell ran past the {budget:.0f} s limit and was interrupted")
            outputs.append(_error("TimeoutError", f"This cell ran past the {budget:.0f} s limit and was interrupted."))
            return outputs
        error = reply.get("error")
        if error:
            outputs.append(_error(str(error.get("ename")), str(error.get("evalue")),
                                  str(error.get("traceback", "")).splitlines()[-30:]))
        self.executed.append(cell.source)
        self.collect_tamper_report()
        return outputs

    def collect_tamper_report(self) -> None:
        try:
            report = self.sandbox.request({"op": "tamper"}, 10, "asking for the tamper report").get("value") or []
        except RunnerDied:
            return
        for flag in report if isinstance(report, list) else []:
            if str(flag)[:200] not in self.result.flags:
                self.result.flags.append(str(flag)[:200])

    def run_test_cell(self, cell, namespace: dict, gid: str, points: float) -> tuple[list[dict], CellResult]:
        self.ensure_running()
        budget = self.cell_budget()
        self.remote.deadline = time.monotonic() + budget
        self.remote.attributes.clear()  # the student's cells ran since the last test
        out = io.StringIO()
        passed, message, ename = False, "", ""
        try:
            code = compile(cell.source, f"<test cell {gid}>", "exec")
            with contextlib.redirect_stdout(out), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(code, RemoteGlobals(self.remote, namespace))  # noqa: S102 - our own test code
            passed = True
        except RunnerDied as exc:
            ename, message = "GraderError", f"the notebook's process ended during this test: {exc}"
            self.result.problems.append(f"{gid}: {exc}")
            if not self.restart(str(exc)):
                raise
        except CellTimeout as exc:
            ename, message = "TimeoutError", f"{exc} (limit {budget:.0f} s)"
            self.result.problems.append(f"{gid}: the student's code ran past the time limit")
        except RecursionError:
            ename, message = "RecursionError", "maximum recursion depth exceeded"
        except NotImplementedError as exc:
            ename = "NotImplementedError"
            message = str(exc) or "something this test uses is not implemented yet (raise NotImplementedError())"
        except Exception as exc:  # noqa: BLE001 - every failure becomes feedback
            ename, message = type(exc).__name__, str(exc)
        outputs = [_stream("stdout", out.getvalue())] if out.getvalue() else []
        if not passed:
            outputs.append(_error(ename, message))
        return outputs, CellResult(gid, points if passed else 0.0, points, passed,
                                   "" if passed else f"{ename}: {message}")

    def check_setup_names(self, trusted: dict) -> None:
        for name, value in trusted.items():
            if name.startswith("_") or not hasattr(value, "__module__") and not hasattr(value, "__name__"):
                continue
            try:
                reply = self.sandbox.request({"op": "describe", "name": name}, 10, "checking names")
            except RunnerDied:
                return
            described = reply.get("value")
            mine = [str(getattr(value, "__module__", "")), str(getattr(value, "__qualname__", ""))]
            if described is None:
                self.result.flags.append(f"deleted {name}, which the tests use")
            elif not isinstance(value, type(sys)) and described != mine:  # modules describe differently
                self.result.flags.append(f"redefined {name}, which the tests use")

    def grade(self, nb, grade_cells: dict[str, float]) -> None:
        self.sandbox.start()
        self.result.sandbox = ("bubblewrap" if self.task.use_bwrap else "limits only") + (
            f", uid {_WORKER_UID}" if _WORKER_UID is not None else "")
        trusted: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            meta = _nbg(cell)
            gid = meta.get("grade_id")
            if self.remaining() <= 0:
                raise TimeoutError(f"the submission used up its total time of {self.task.limits.total_timeout:.0f} s")
            if gid == SETUP_ID:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exec(compile(cell.source, "<setup>", "exec"), trusted)  # noqa: S102 - instructor's cell
                cell.outputs = self.run_student_cell(cell)
            elif gid in grade_cells and not meta.get("solution"):
                calls, began = self.remote.calls, time.monotonic()
                cell.outputs, res = self.run_test_cell(cell, trusted, gid, grade_cells[gid])
                self.result.cells.append(res)
                self.log(f"{gid}: {'passed' if res.passed else res.message[:300]} "
                         f"({self.remote.calls - calls} requests, {time.monotonic() - began:.2f} s)")
            else:
                for flag in scan_for_tampering(cell.source):
                    if flag not in self.result.flags:
                        self.result.flags.append(flag)
                cell.outputs = self.run_student_cell(cell)
            if "execution_count" in cell:
                cell.execution_count = None
        self.check_setup_names(trusted)
        self.collect_tamper_report()

    def close(self) -> None:
        self.sandbox.kill()
        shutil.rmtree(self.sandbox.scratch, ignore_errors=True)


def grade_submission(task: Task) -> Result:
    import nbformat
    from nbgrader.api import Gradebook

    name = Path(task.path).stem
    result = Result(task.student, task.assignment, name)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(f"[{time.strftime('%H:%M:%S')}] {line}")

    start = time.monotonic()
    with Gradebook(task.db_url) as gb:
        nb_row = gb.find_notebook(name, task.assignment)
        grade_cells = {c.name: float(c.max_score) for c in nb_row.grade_cells if c.cell_type == "code"}
        source_cells = {c.name: SimpleNamespace(source=c.source, locked=c.locked) for c in nb_row.source_cells}
    log(f"grading {task.path}")
    grader = None
    try:
        try:
            student_nb = nbformat.read(task.path, as_version=4)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"the file is not a readable notebook ({type(exc).__name__}: {exc})") from None
        source_nb = nbformat.read(task.source, as_version=4)
        nb = prepare(student_nb, source_nb, source_cells, grade_cells, result.notes)
        grader = Grader(task, result, log)
        grader.grade(nb, grade_cells)
        graded = {c.grade_id for c in result.cells}
        for gid, points in grade_cells.items():
            if gid not in graded:
                result.cells.append(CellResult(gid, 0.0, points, False, "test cell did not run"))
        if result.problems:
            result.status, result.reason = "problems", "; ".join(result.problems)[:1000]
        out_dir = Path(task.autograded)
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / Path(task.path).name)
        stamp = Path(task.path).parent / "timestamp.txt"
        if stamp.is_file():
            shutil.copy(stamp, out_dir / "timestamp.txt")
    except (RunnerDied, TimeoutError, ValueError) as exc:
        result.status, result.reason = "ungradable", str(exc)
        log(f"could not be graded: {exc}")
    except Exception as exc:  # noqa: BLE001 - a grader bug must not stop the batch
        result.status, result.reason = "ungradable", f"grader error: {type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        if grader is not None:
            grader.close()
    if result.status == "ungradable":
        graded = {c.grade_id for c in result.cells}
        result.cells += [CellResult(g, 0.0, p, False, "not graded") for g, p in grade_cells.items() if g not in graded]
    result.seconds = round(time.monotonic() - start, 2)
    for flag in result.flags:
        log(f"FLAG {flag}")
    for problem in result.problems:
        log(f"problem: {problem}")
    for note in result.notes:
        log(f"note: {note}")
    log(f"status {result.status} {result.reason}; score {result.score}/{result.max_score} in {result.seconds} s")
    Path(task.log).parent.mkdir(parents=True, exist_ok=True)
    Path(task.log).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result


# -- the batch ------------------------------------------------------------------------------
def record(db_url: str, result: Result) -> None:
    """Write one result into the gradebook (main process only: one writer)."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy warnings
        gb.update_or_create_student(result.student)
        gb.update_or_create_submission(result.assignment, result.student)
        for cell in result.cells:
            grade = gb.find_grade(cell.grade_id, result.notebook, result.assignment, result.student)
            grade.auto_score = cell.points
            grade.needs_manual_grade = result.status == "ungradable"
        nb = gb.find_submission_notebook(result.notebook, result.assignment, result.student)
        nb.flagged = bool(result.flags) or result.status != "graded"
        gb.db.commit()


def _preload() -> None:
    """Import what test cells use before the workers fork, so that each worker does not pay for it."""
    for module in ("numpy", "torch", "nbformat", "nbgrader.api", "goingdeeper", "goingdeeper.checks",
                   "goingdeeper.scalar", "goingdeeper.grading", "matplotlib"):
        with contextlib.suppress(ImportError):
            __import__(module)


def discover(root: Path, submissions: Path, assignment: str, students: list[str] | None) -> list[tuple[str, Path]]:
    found = []
    if not submissions.is_dir():
        return found
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir()):
        if students and student_dir.name not in students:
            continue
        for path in sorted((student_dir / assignment).glob("*.ipynb")):
            found.append((student_dir.name, path))
    return found


def write_csv(path: Path, results: list[Result]) -> None:
    cell_ids = sorted({c.grade_id for r in results for c in r.cells})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["assignment", "student", "notebook", "status", "reason", "score", "max_score", "flags",
                         "problems", "notes", "seconds", *cell_ids])
        for r in sorted(results, key=lambda r: (r.assignment, r.student)):
            by_id = {c.grade_id: c.points for c in r.cells}
            writer.writerow([r.assignment, r.student, r.notebook, r.status, r.reason,
                             "" if r.score is None else r.score, r.max_score, "; ".join(r.flags),
                             "; ".join(r.problems), "; ".join(r.notes), r.seconds,
                             *["" if r.status == "ungradable" else by_id.get(g, "") for g in cell_ids]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="an assignment id (01_computational_graphs) or 'all'")
    parser.add_argument("--course", type=Path, default=HERE.parent, help="course root (default: this repository)")
    parser.add_argument("--submissions", type=Path, help="submissions folder (default: autograder/submitted)")
    parser.add_argument("--students", help="comma-separated student ids (default: everyone found)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel submissions (default: cores)")
    parser.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    parser.add_argument("--total-timeout", type=float, default=Limits.total_timeout, help="seconds per submission")
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="address space per submission")
    parser.add_argument("--max-processes", type=int, default=Limits.max_processes, help="processes and threads")
    parser.add_argument("--output-kb", type=int, default=Limits.output_kb, help="output kept per cell")
    parser.add_argument("--no-bwrap", action="store_true", help="do not use bubblewrap even where it works")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from nbgrader.api import Gradebook

    root = args.course.resolve()
    db_path = root / "autograder" / "gradebook.db"
    db_url = f"sqlite:///{db_path}"
    submissions = (args.submissions or root / "autograder" / "submitted").resolve()
    if not submissions.is_dir():
        parser.error(f"no submissions folder at {submissions}: collect submissions first (see the README)")
    if not db_path.is_file():
        parser.error(f"no gradebook at {db_path}: run `bash course.sh release` first")
    with Gradebook(db_url) as gb:
        known = [a.name for a in gb.assignments]
    wanted = known if args.assignment == "all" else [args.assignment]
    for a in wanted:
        if a not in known:
            parser.error(f"assignment {a!r} is not in the gradebook ({', '.join(known) or 'none'}): "
                         "run `bash course.sh release` first")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    use_bwrap = not args.no_bwrap and bwrap_available()
    if not use_bwrap:
        print("warning: bubblewrap is not available, so the notebooks' code could read and write what the grader "
              "can (time, memory and process limits still apply). Install it: apt install bubblewrap",
              file=sys.stderr)
    limits = Limits(cell_timeout=args.cell_timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                    max_processes=args.max_processes, output_kb=args.output_kb)
    students = args.students.split(",") if args.students else None
    hide = [str(submissions)] + [str(p) for p in (db_path.parent,)]
    tasks = []
    for a in wanted:
        for student, path in discover(root, submissions, a, students):
            source = root / "solutions" / a / path.name
            if not source.is_file():
                print(f"skipping {path}: no notebook {path.name} in solutions/{a}", file=sys.stderr)
                continue
            tasks.append(Task(student, a, str(path), str(source), db_url,
                              str(root / "autograder" / "autograded" / student / a),
                              str(root / "autograder" / "reports" / a / "logs" / f"{student}.log"),
                              limits, use_bwrap, hide))
    if not tasks:
        print(f"no submissions for {', '.join(wanted)} under {submissions}", file=sys.stderr)
        return 1

    from tqdm import tqdm

    _preload()
    results: list[Result] = []
    started = time.monotonic()
    counter = multiprocessing.get_context("fork").Value("i", 0)
    with ProcessPoolExecutor(max_workers=min(args.workers, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_worker, initargs=(counter,)) as pool:
        futures = {pool.submit(grade_submission, t): t for t in tasks}
        with tqdm(total=len(tasks), unit="submission", disable=args.quiet, file=sys.stderr) as bar:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker died: report, keep going
                    result = Result(task.student, task.assignment, Path(task.path).stem, "ungradable",
                                    f"the grading worker failed: {type(exc).__name__}: {exc}")
                if result.cells:
                    record(db_url, result)
                results.append(result)
                bar.set_postfix_str(f"{result.student}: {result.status}")
                bar.update()
    elapsed = time.monotonic() - started

    from report import write_report

    for a in wanted:
        mine = [r for r in results if r.assignment == a]
        if not mine:
            continue
        out = root / "autograder" / "reports" / a
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "grades.csv", mine)
        write_report(out / "report.html", a, mine)
        (out / "results.json").write_text(json.dumps([asdict(r) | {"score": r.score, "max_score": r.max_score}
                                                      for r in mine], indent=1), encoding="utf-8")
        ungradable = [r for r in mine if r.status == "ungradable"]
        flagged = [r for r in mine if r.flags]
        print(f"{a}: graded {len(mine) - len(ungradable)} of {len(mine)} submissions"
              + (f", {len(ungradable)} could not be graded" if ungradable else "")
              + (f", {len(flagged)} flagged" if flagged else "")
              + f". Report: {out / 'report.html'}")
    print(f"{len(results)} submissions in {elapsed:.1f} s with {min(args.workers, len(tasks))} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
