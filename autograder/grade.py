"""Grade submissions in parallel, sandboxed, with tests the student's code cannot reach.

    bash course.sh grade 01_computational_graphs        # or: all
    bash course.sh grade all --workers 2 --submissions path/to/submitted

For every submission (``<submissions>/<student>/<assignment>/*.ipynb``, the
layout nbgrader's ``collect`` and ``zip_collect`` produce), in a pool of
worker processes:

1. the notebook is planned from the course, not from the submission: locked,
   set-up and test cells are the gradebook's, in the source notebook's order
   and types; the student's answers and extra cells fill in around them
   (``sandbox/boundary.py``, the trust boundary on one page);
2. the student's cells run in a sandbox under time, memory, process and
   output limits, on a scratch copy of the submission's regular files;
3. each test cell runs in the grader's own process, against proxies of the
   student's objects (``sandbox/session.py``, ``sandbox/trusted.py``);
4. scores go into the course gradebook (so ``nbgrader generate_feedback``,
   ``nbgrader export`` and the formgrader work as usual), and the autograded
   notebook, with the grader's verdicts as the test cells' outputs, into
   ``autograder/autograded/``.

This file keeps the command line, the pool and the gradebook. A submission
that cannot be graded is reported as such with the reason, never as a silent
0, and a failed regrade replaces the old score with that mark.
``autograder/reports/<assignment>/`` receives ``grades.csv``, ``report.html``
and one log per submission.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing
import os
import re
import shutil
import stat
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bundles  # noqa: E402
from sandbox import boundary  # noqa: E402
from sandbox.session import NOT_GRADED, CellResult, Result, Session, scan_for_tampering  # noqa: E402,F401
from sandbox.trusted import (Limits, RunnerDied, SandboxSetupError, UidLease, bwrap_available,  # noqa: E402
                             interpreter_runs_as, preflight)

_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", re.S | re.M)


def without_hidden_tests(source: str) -> str:
    """A test cell's source as the release shows it (nbgrader drops the hidden block)."""
    return _HIDDEN.sub("", source)


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
    drop_uid: bool  # run the student's code under a leased unprivileged user id (root only)
    data: str | None
    notebook: str = ""  # the assignment's notebook (its stem), whatever the submitted file is called


# -- one submission, in a worker -----------------------------------------------------------------
_LEASE: UidLease | None = None
_LEASE_FAILED: str = ""  # why this worker could not lease a user id (its submissions report a grader error)


def _init_worker(drop_uid: bool) -> None:
    global _LEASE, _LEASE_FAILED
    warnings.simplefilter("ignore")
    if drop_uid:
        try:
            _LEASE = UidLease()  # held for the worker's life; the kernel drops it when the worker ends
        except Exception as exc:  # noqa: BLE001 - an initializer that raises would break the pool: report instead
            _LEASE_FAILED = f"{type(exc).__name__}: {exc}"
    if "torch" in sys.modules:  # workers run side by side: one thread each
        sys.modules["torch"].set_num_threads(1)


def _course(task: Task, nb_row) -> tuple[list[boundary.CourseCell], str]:
    import nbformat

    grade_points = {c.name: float(c.max_score) for c in nb_row.grade_cells if c.cell_type == "code"}
    known = {c.name: SimpleNamespace(source=c.source, locked=c.locked, cell_type=c.cell_type)
             for c in nb_row.source_cells}
    solutions = {c.name for c in nb_row.solution_cells}
    source_nb = nbformat.read(task.source, as_version=4)
    cells = boundary.course_cells(source_nb, known, grade_points, solutions)
    setup = next((c.source for c in cells if c.role == boundary.SETUP), "")
    return cells, setup


def grade_submission(task: Task) -> Result:
    from nbgrader.api import Gradebook

    name = task.notebook or Path(task.path).stem
    result = Result(task.student, task.assignment, name)
    if Path(task.path).stem != name:
        result.submitted_as = Path(task.path).name
        result.note(f"graded {Path(task.path).name}, the only notebook in the folder, as {name}.ipynb")
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(f"[{time.strftime('%H:%M:%S')}] {boundary.clean_text(line)}")

    start = time.monotonic()
    log(f"grading {task.path}")
    session = None
    out_dir = Path(task.autograded)
    tests: list[boundary.CourseCell] = []
    try:
        if _LEASE_FAILED:
            raise SandboxSetupError(f"the grading worker could not lease a user id ({_LEASE_FAILED})")
        if threading.current_thread() is not threading.main_thread():  # the tests' timer is a signal
            raise SandboxSetupError("grading must run in the main thread of its process (the time limit of a test "
                                    "is a SIGALRM timer)")
        with Gradebook(task.db_url) as gb:
            course, setup = _course(task, gb.find_notebook(name, task.assignment))
        tests = [c for c in course if c.role == boundary.TEST]
        result.timestamp = submission_timestamp(Path(task.path).parent)
        result.answers = raw_digest(Path(task.path))  # until the answers are read (a file that is no notebook)
        student_cells = boundary.read_submission(Path(task.path), result.notes)
        planned = boundary.plan_cells(student_cells, course, result.notes, without_hidden_tests)
        result.answers = answers_digest(planned)
        uid = _LEASE.uid if _LEASE is not None else None
        session = Session(result, task.limits, log, uid=uid, use_bwrap=task.use_bwrap,
                          data=Path(task.data) if task.data else None, submission=Path(task.path).parent)
        result.sandbox = ("bubblewrap" if task.use_bwrap else "no sandbox") + (f", uid {uid}" if uid else "")
        session.grade(planned, setup)
        graded = {c.grade_id for c in result.cells}
        for cell in tests:
            if cell.grade_id not in graded:
                result.cells.append(CellResult(cell.grade_id, 0.0, cell.points, False, "test cell did not run"))
        if result.problems:
            result.status, result.reason = "problems", "; ".join(result.problems)[:1000]
        _write_autograded(task, planned, out_dir)
    except SandboxSetupError as exc:  # nothing of the submission's doing: never recorded as the student's
        result.status, result.reason = "grader error", boundary.keep_text(f"the grader's set-up failed: {exc}", 1000)
        log(f"grader set-up failed: {exc}")
    except boundary.NotGradable as exc:
        result.status, result.reason = "ungradable", f"the submission: {exc}"
        log(f"could not be graded: {exc}")
    except (RunnerDied, TimeoutError) as exc:
        result.status, result.reason = "ungradable", boundary.keep_text(exc, 1000)
        log(f"could not be graded: {exc}")
    except Exception as exc:  # noqa: BLE001 - a grader bug must not stop the batch, nor count as the student's
        result.status = "grader error"
        result.reason = boundary.keep_text(f"grader error (please report it): {type(exc).__name__}: {exc}", 1000)
        log(traceback.format_exc())
    finally:
        if session is not None:
            session.close()
    if result.status == "ungradable":
        graded = {c.grade_id for c in result.cells}
        result.cells += [CellResult(c.grade_id, 0.0, c.points, False, "not graded") for c in tests
                         if c.grade_id not in graded]
        _remove_stale_autograded(out_dir)
    result.seconds = round(time.monotonic() - start, 2)
    for flag in result.flags:
        log(f"FLAG {flag}")
    for problem in result.problems:
        log(f"problem: {problem}")
    for note in result.notes:
        log(f"note: {note}")
    log(f"status {result.status} {result.reason}; score {result.score}/{result.max_score} in {result.seconds} s")
    try:
        Path(task.log).parent.mkdir(parents=True, exist_ok=True)
        Path(task.log).write_text("\n".join(lines) + "\n", encoding="utf-8", errors="backslashreplace")
    except OSError as exc:  # the grader's disk, not the student's doing: the result still counts
        result.problems.append(boundary.keep_text(f"the grader could not write the log {task.log}: {exc}", 300))
    return result


def answers_digest(planned: list[boundary.PlannedCell]) -> str:
    """A digest of what the student wrote: the answer cells and the cells of their own, in order."""
    import hashlib

    h = hashlib.sha256()
    for p in planned:
        if p.role in (boundary.ANSWER, boundary.STUDENT):
            h.update(f"{p.role}:{p.grade_id or ''}:{len(p.cell.source)}:".encode() + p.cell.source.encode("utf-8", "replace"))
    return h.hexdigest()[:32]


def raw_digest(path: Path) -> str:
    """A digest of a submitted file's bytes (never through a link), for a submission whose answers cannot be read."""
    import hashlib

    h = hashlib.sha256(b"raw:")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return "raw:" + hashlib.sha256(f"unreadable {exc.errno}".encode()).hexdigest()[:28]
    with os.fdopen(fd, "rb") as f:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            for _ in range(boundary.MAX_NOTEBOOK_BYTES // (1 << 20) + 1):
                if not (chunk := f.read(1 << 20)):
                    break
                h.update(chunk)
    return "raw:" + h.hexdigest()[:28]


def _small_file(path: Path, pattern: str, limit: int) -> str:
    """The text of a small regular file (never a link) when it matches ``pattern``, else ''."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ""
        text = f.read(limit).decode("utf-8", "replace").strip()
    return text if re.fullmatch(pattern, text) else ""


def submission_timestamp(folder: Path) -> str:
    """The exchange's record of when the student submitted (``timestamp.txt``, which ``nbgrader submit`` writes and
    ``nbgrader collect`` copies), or '' when there is none."""
    return _small_file(folder / "timestamp.txt", r"[0-9T:.\- +A-Za-z/_]{10,60}", 200)


def _write_autograded(task: Task, planned: list[boundary.PlannedCell], out_dir: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[p.cell for p in planned])
    nb.metadata.update(nbformat.read(task.source, as_version=4).metadata)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / f"{task.notebook or Path(task.path).stem}.ipynb")
    target = out_dir / "timestamp.txt"
    target.unlink(missing_ok=True)
    if text := submission_timestamp(Path(task.path).parent):  # nbgrader's submission time, for its feedback
        target.write_text(text, encoding="utf-8")
    # The exchange's secret for this submission: release_feedback files the student's feedback under it.
    secret = out_dir / "submission_secret.txt"
    secret.unlink(missing_ok=True)
    if text := _small_file(Path(task.path).parent / "submission_secret.txt", r"[0-9a-fA-F]{16,512}", 1100):
        secret.write_text(text, encoding="utf-8")


def _remove_stale_autograded(out_dir: Path) -> None:
    """A failed regrade leaves no earlier autograded notebook behind for feedback to be made from."""
    if out_dir.is_dir() and not out_dir.is_symlink():
        shutil.rmtree(out_dir, ignore_errors=True)


# -- one submission on a Dask worker (cluster.py) ----------------------------------------------------------
_CLUSTER_WORKER: dict = {}
_ONE_AT_A_TIME = threading.Lock()  # a cluster worker process grades one submission at a time, whatever its threads


def cluster_fields(task: Task) -> dict:
    """What a Dask worker needs of a task: plain data (the worker imports its own copy of this module), and the
    grader's version, which the worker's copy must share."""
    return asdict(task) | {"grader_version": bundles.grader_version()}


def grade_in_cluster_worker(fields: dict) -> dict:
    """Grade one submission on a cluster worker, as the local pool's worker does, into a folder of the worker's
    own; returns the result with the autograded files and the log, for the driver to write."""
    with _ONE_AT_A_TIME:
        return _grade_in_cluster_worker(fields)


def _init_cluster_child(drop_uid: bool) -> None:
    _init_worker(drop_uid)
    _preload()


def _grade_in_cluster_worker(fields: dict) -> dict:
    import tempfile

    if not _CLUSTER_WORKER:  # once per worker process: a child process that grades as the local pool's workers do
        use_bwrap = bwrap_available()
        drop_uid = os.getuid() == 0 and (shutil.which("setpriv") is not None if use_bwrap else True)
        # Dask runs tasks in threads, and grading needs a process's main thread (its timers are signals): one
        # child process, started once, grades this worker's submissions one after another.
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_cluster_child, initargs=(drop_uid,))
        # A worker started by Dask's nanny is a daemonic process, which multiprocessing forbids to have children
        # (Dask's own setting distributed.worker.daemon: False lifts it for the whole worker). The child is ours
        # to manage: it ends when its pipe to this process closes, so start it with the flag lifted, now.
        config = multiprocessing.current_process()._config  # noqa: SLF001 - multiprocessing has no public switch
        daemonic = config.get("daemon")
        config["daemon"] = False
        try:
            pool.submit(int).result()
        finally:
            config["daemon"] = daemonic
        _CLUSTER_WORKER.update(use_bwrap=use_bwrap, drop_uid=drop_uid, pool=pool)
    fields = dict(fields)
    wanted, mine = fields.pop("grader_version", None), bundles.grader_version()
    fields["limits"] = Limits(**fields["limits"]) if isinstance(fields["limits"], dict) else fields["limits"]
    if wanted != mine:
        result = Result(fields["student"], fields["assignment"], fields["notebook"] or Path(fields["path"]).stem,
                        "grader error", f"the worker on {os.uname().nodename} has another version of the grader "
                        f"({mine}, the driver's is {wanted}): give every node the same checkout")
        return {"result": asdict(result), "files": {}, "log": ""}
    if fields["use_bwrap"] and not _CLUSTER_WORKER["use_bwrap"]:
        result = Result(fields["student"], fields["assignment"], fields["notebook"] or Path(fields["path"]).stem,
                        "grader error", f"the worker on {os.uname().nodename} has no working bubblewrap: install it "
                        "there (apt install bubblewrap) or grade elsewhere")
        return {"result": asdict(result), "files": {}, "log": ""}
    fields["drop_uid"] = _CLUSTER_WORKER["drop_uid"]
    with tempfile.TemporaryDirectory(prefix="goingdeeper-grade-") as tmp:
        fields["autograded"] = str(Path(tmp) / "autograded")
        fields["log"] = str(Path(tmp) / "grade.log")
        try:
            result = _CLUSTER_WORKER["pool"].submit(grade_submission, Task(**fields)).result()
        except BaseException:
            pool = _CLUSTER_WORKER.pop("pool", None)
            _CLUSTER_WORKER.clear()  # a broken child: the next submission starts a fresh one
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
        out = Path(fields["autograded"])
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} \
            if out.is_dir() else {}
        log = Path(fields["log"]).read_text(encoding="utf-8", errors="replace") if Path(fields["log"]).is_file() else ""
    return {"result": asdict(result), "files": files, "log": log}


def apply_cluster_payload(task: Task, payload: dict) -> Result:
    """A worker's result, here: its autograded files and log written where a local run writes them."""
    data = dict(payload["result"])
    cells = [CellResult(**c) for c in data.pop("cells", [])]
    result = Result(**{k: v for k, v in data.items() if k in Result.__dataclass_fields__}, cells=cells)
    out = Path(task.autograded)
    _remove_stale_autograded(out)
    files = payload.get("files") or {}
    for rel, content in files.items():
        target = (out / rel).resolve()
        if out.resolve() not in target.parents:
            continue  # a worker writes inside the submission's own folder only
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    Path(task.log).parent.mkdir(parents=True, exist_ok=True)
    Path(task.log).write_text(str(payload.get("log", "")) + f"[graded on {payload.get('host', '?')}]\n",
                              encoding="utf-8")
    return result


def cluster_failure(task: Task, reason: str, died: bool) -> Result:
    """Grading failed twice on the cluster: ungradable when each time the process grading it died (as a local
    worker that dies twice), else a failure of the grader's (recorded for no one)."""
    if died:
        return _failed(task, reason)
    return Result(task.student, task.assignment, task.notebook or Path(task.path).stem, "grader error",
                  boundary.keep_text(f"grader error (please report it): {reason}", 1000))


# -- the batch ------------------------------------------------------------------------------
def run_pool(tasks: list[Task], workers: int, drop_uid: bool, done, stop=lambda result: False) -> list[Result]:
    """Grade ``tasks`` in a pool of workers; ``done(result, task)`` is called in this process for each.

    A worker that dies breaks the pool, and every submission not finished then fails with it. Those
    are graded again, each in a pool of its own: an innocent one is graded, the one whose grading
    kills its worker is reported ungradable. When ``stop(result)`` is true (the grader's own set-up
    failed), submissions not yet started are left alone, and the batch ends with those already running.
    """
    from concurrent.futures.process import BrokenProcessPool

    results: list[Result] = []
    if not tasks:
        return results
    rounds = [(list(tasks), workers)]
    stopped = False
    while rounds and not stopped:
        batch, size = rounds.pop(0)
        with ProcessPoolExecutor(max_workers=min(size, len(batch)), initializer=_init_worker,
                                 initargs=(drop_uid,), mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(grade_submission, t): t for t in batch}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                task = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    if size > 1 or len(batch) > 1:
                        rounds.append(([task], 1))  # again, alone
                        continue
                    result = _failed(task, "its grading worker died (the submission may exhaust the machine)")
                except BaseException as exc:  # noqa: BLE001 - the grader failed, not the student: report, keep going
                    result = Result(task.student, task.assignment, task.notebook or Path(task.path).stem,
                                    "grader error", boundary.keep_text(
                                        f"grader error (please report it): the grading worker failed: "
                                        f"{type(exc).__name__}: {exc}", 1000))
                results.append(result)
                done(result, task)
                if stop(result) and not stopped:
                    stopped = True
                    for other in futures:
                        other.cancel()  # those not started yet
    return results


def _failed(task: Task, reason: str) -> Result:
    _remove_stale_autograded(Path(task.autograded))
    return Result(task.student, task.assignment, task.notebook or Path(task.path).stem, "ungradable",
                  boundary.keep_text(reason, 1000))


def record(db_url: str, result: Result, test_ids: list[str], reports: Path | None = None, term=None) -> bool:
    """Write one result into the gradebook (main process only: one writer).

    An ungradable submission gets no automatic score in any cell (replacing an earlier one),
    is marked for manual grading and flagged. A misnamed one (not graded) does the same to an earlier
    grade, if there is one: the gradebook never keeps a score the current submission did not earn.
    An instructor's manual score or comment (the Formgrader's) is kept while the student's answers are
    those of the last grading (``reports``: the earlier results) and dropped, with a note, once they changed.
    The submission's time (the exchange's timestamp.txt), the term's due date and the student's extension go
    into the gradebook, and the late penalty with them (``term``: :mod:`instructor.term`).
    Returns whether the gradebook was written.
    """
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.utils import parse_utc

    if result.status in NOT_GRADED and result.status not in ("ungradable", "misnamed"):
        return False  # nothing was graded: no submission, or the grader failed (the gradebook keeps what it had)
    with Gradebook(db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy warnings
        if result.status == "misnamed":
            try:
                gb.find_submission(result.assignment, result.student)
            except MissingEntry:
                return False
        gb.update_or_create_student(result.student)
        when = {}
        if result.timestamp:
            try:
                when = {"timestamp": parse_utc(result.timestamp)}
            except (ValueError, OverflowError):
                result.note(f"the submission's timestamp.txt ({result.timestamp[:60]}) is not a time: lateness unknown")
        gb.update_or_create_submission(result.assignment, result.student, **when)
        before = _graded_answers(reports, result.student) if reports is not None else ""
        changed = bool(before and result.answers and before != result.answers)
        points = {c.grade_id: c.points for c in result.cells}
        nb = gb.find_submission_notebook(result.notebook, result.assignment, result.student)
        for gid in test_ids:
            grade = gb.find_grade(gid, result.notebook, result.assignment, result.student)
            if result.status in ("ungradable", "misnamed"):
                grade.auto_score, grade.needs_manual_grade = None, True
            else:
                grade.auto_score, grade.needs_manual_grade = points.get(gid, 0.0), False
        for grade in nb.grades:
            if grade.manual_score is not None and changed:
                result.note(f"dropped the manual score {grade.manual_score:g} of {grade.name}: the answers changed "
                            "since it was given")
                grade.manual_score = None
        for comment in nb.comments:
            if comment.manual_comment and changed:
                result.note(f"dropped the comment on {comment.name} ({comment.manual_comment[:80]!r}): the answers "
                            "changed since it was written")
                comment.manual_comment = None
        nb.flagged = bool(result.flags) or result.status != "graded"
        gb.db.commit()
        if reports is not None and result.answers:  # the answers the gradebook's scores now belong to
            _keep_graded_answers(reports, result.student, result.answers)
        if term is not None:
            from instructor.term import assign_late_penalty, sync_submission

            if result.status in ("ungradable", "misnamed"):
                sync_submission(gb, term, result.assignment, result.student)
            else:
                assign_late_penalty(gb, term, result.assignment, result.student, result.notebook)
    return True


def _graded_answers(reports: Path, student: str) -> str:
    """The digest of the answers the gradebook's scores of ``student`` belong to ('' when unknown)."""
    try:
        return _result_file(reports / "answers", student).with_suffix(".txt").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _keep_graded_answers(reports: Path, student: str, digest: str) -> None:
    path = _result_file(reports / "answers", student).with_suffix(".txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(digest, encoding="utf-8")
    os.replace(path.with_suffix(".tmp"), path)


def load_term(root: Path):
    """The course's term (autograder/term.toml), or a clear exit when it cannot be read."""
    from instructor.term import TermError
    from instructor.term import load_term as load

    try:
        return load(root=root)
    except TermError as exc:
        raise SystemExit(f"course.sh grade: {exc}") from None


def _preload() -> None:
    """Import what test cells use before the workers fork, so that each worker does not pay for it."""
    for module in ("numpy", "torch", "nbformat", "nbgrader.api", "goingdeeper", "goingdeeper.checks",
                   "goingdeeper.scalar", "goingdeeper.grading", "matplotlib"):
        with contextlib.suppress(ImportError):
            __import__(module)
    from goingdeeper import ownwork

    ownwork.package_pieces()  # the package's code, read once, for the own-work check's likeness flags


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _listing(folder: Path, limit: int = 6) -> str:
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return "cannot be listed"
    if not names:
        return "is empty"
    return "holds " + ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class Found:
    """What the submissions folder holds for one student and one assignment."""

    student: str
    tasks: list[tuple[Path, str]]  # (the file to grade, the notebook it is graded as)
    rows: list[Result]  # what is not graded, with the reason: missing, misnamed, not a folder


def discover(submissions: Path, assignment: str, students: list[str] | None, notebooks: list[str]) -> list[Found]:
    """Every student folder of ``submissions`` (or those of ``students``), with what it holds for ``assignment``.

    ``notebooks``: the assignment's notebook names (stems). Every student gets either a file to grade
    or a row that says why not: no folder, no notebook, several notebooks none of which has the
    name. A folder whose only notebook has another name (``04_resnet (1).ipynb``, as a browser saves a
    second download) is graded as the assignment's notebook, and the row says so. Links are never
    followed (``read_submission`` reports a linked notebook as ungradable).
    """
    out: list[Found] = []
    if not _is_real_dir(submissions):
        return out
    for student in students or student_names(submissions):
        try:
            out.append(_discover_one(submissions, student, assignment, notebooks))
        except OSError as exc:  # a folder the grader cannot read: the row says so
            out.append(Found(student, [], [Result(student, assignment, nb, "ungradable", boundary.keep_text(
                f"the submission folder cannot be read ({exc.strerror or exc})", 300)) for nb in notebooks]))
    return out


def student_names(submissions: Path) -> list[str]:
    """The student folders (and links to folders, reported as such) of ``submissions``. Hidden entries
    (``.DS_Store``, ``.ipynb_checkpoints``), ``__MACOSX`` and plain files are not students."""
    names = []
    for entry in sorted(submissions.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_symlink() or entry.is_dir():
            names.append(entry.name)
    return names


def _discover_one(submissions: Path, student: str, assignment: str, notebooks: list[str]) -> Found:
    """What one student's folder holds for ``assignment`` (see :func:`discover`)."""
    student_dir = submissions / student
    found = Found(student, [], [])
    if not (student_dir.exists() or student_dir.is_symlink()):
        found.rows += [Result(student, assignment, nb, "missing", f"no folder {student} in {submissions}")
                       for nb in notebooks]
        return found
    if not _is_real_dir(student_dir):
        found.rows += [Result(student, assignment, nb, "ungradable",
                              f"{student} is not a folder (links are not followed)") for nb in notebooks]
        return found
    folder = student_dir / assignment
    if not folder.exists() and not folder.is_symlink():
        found.rows += [Result(student, assignment, nb, "missing",
                              f"no folder {assignment} in {student}'s submissions") for nb in notebooks]
        return found
    if not _is_real_dir(folder):
        found.rows += [Result(student, assignment, nb, "ungradable",
                              f"{student}/{assignment} is not a folder (links are not followed)")
                       for nb in notebooks]
        return found
    present = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))  # ._x: macOS metadata
    others = [p for p in present if p.stem not in notebooks]
    for nb in notebooks:
        exact = folder / f"{nb}.ipynb"
        if exact.exists() or exact.is_symlink():
            found.tasks.append((exact, nb))
        elif len(others) == 1 and len(notebooks) == 1:
            found.tasks.append((others[0], nb))
        elif not others:
            found.rows.append(Result(student, assignment, nb, "missing",
                                     f"no notebook in {student}/{assignment}: the folder {_listing(folder)}"))
        else:
            found.rows.append(Result(
                student, assignment, nb, "misnamed",
                f"no {nb}.ipynb in {student}/{assignment}, and {len(others)} other notebooks "
                f"({', '.join(p.name for p in others[:5])}): not graded. Rename the one to grade to "
                f"{nb}.ipynb and grade this student again."))
    return found


# -- the whole class, for the report and the CSV ---------------------------------------------------
def _result_file(folder: Path, student: str) -> Path:
    from urllib.parse import quote

    return folder / f"{quote(student, safe='')}.json"


def save_result(reports: Path, result: Result) -> None:
    """Keep one student's latest result, so that a later run for other students still reports the class."""
    folder = reports / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = _result_file(folder, result.student)
    path.with_suffix(".tmp").write_text(json.dumps(asdict(result)), encoding="utf-8")
    os.replace(path.with_suffix(".tmp"), path)


def _load_result(path: Path) -> Result | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cells = [CellResult(**c) for c in data.pop("cells", [])]
        return Result(**{k: v for k, v in data.items() if k in Result.__dataclass_fields__}, cells=cells)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def class_results(db_url: str, assignment: str, reports: Path, also: list[str], term=None) -> list[Result]:
    """One row per student of the class for ``assignment``: every student of the gradebook, of ``also`` (the
    submissions folder) and of earlier runs, with their latest result; graded outside this command
    (``nbgrader autograde``): their scores from the gradebook; else missing."""
    from nbgrader.api import Gradebook, MissingEntry

    rows: dict[str, Result] = {}
    for path in sorted((reports / "results").glob("*.json")) if (reports / "results").is_dir() else []:
        r = _load_result(path)
        if r is not None and r.assignment == assignment:
            rows[r.student] = r
    with Gradebook(db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebooks = [n.name for n in gb.find_assignment(assignment).notebooks]
        for student in sorted({s.id for s in gb.students} | set(also)):
            if student in rows:
                continue
            for nb in notebooks:
                try:
                    sub = gb.find_submission_notebook(nb, assignment, student)
                except MissingEntry:
                    rows[student] = Result(student, assignment, nb, "missing", "no submission")
                    continue
                r = Result(student, assignment, nb, "graded")
                code = [g for g in sub.grades if g.cell_type == "code"]
                for g in code:
                    score = g.score if g.score is not None else 0.0
                    r.cells.append(CellResult(g.name, float(score), float(g.max_score), score >= g.max_score))
                if any(g.score is None or g.needs_manual_grade for g in code):
                    r.status, r.reason = "ungradable", "not graded automatically: the gradebook marks it for manual grading"
                else:
                    r.note("graded outside this command (nbgrader autograde or by hand): scores from the gradebook")
                rows[student] = r
        _gradebook_view(gb, assignment, rows, term)
    return sorted(rows.values(), key=lambda r: r.student)


def _gradebook_view(gb, assignment: str, rows: dict[str, Result], term=None) -> None:
    """What the gradebook adds to each row: scores given by hand (they replace the automatic ones), comments, and
    the lateness and late penalty of the submission (worked out anew from the scores and ``term`` as they are now:
    a hand grade or an extension given after grading counts)."""
    from nbgrader.api import MissingEntry

    for r in rows.values():
        try:
            sub = gb.find_submission(assignment, r.student)
            nb = gb.find_submission_notebook(r.notebook, assignment, r.student)
        except MissingEntry:
            continue
        if term is not None:
            from instructor.term import assign_late_penalty

            assign_late_penalty(gb, term, assignment, r.student)
        cells = {c.grade_id: c for c in r.cells}
        r.overrides = []
        for g in nb.grades:
            if g.manual_score is not None:
                auto = "none" if g.auto_score is None else f"{g.auto_score:g}"
                r.overrides.append(f"{g.name}: {g.manual_score:g} by hand (automatic: {auto})")
                if g.name in cells:
                    cells[g.name].points = float(g.manual_score)
                    cells[g.name].passed = g.manual_score >= cells[g.name].max_points
        r.overrides += [f"comment on {c.name}: {c.manual_comment[:200]}" for c in nb.comments if c.manual_comment]
        late = float(sub.total_seconds_late or 0.0)
        r.penalty = float(nb.late_submission_penalty or 0.0) if r.score is not None else 0.0
        if late > 0:
            from instructor.term import lateness

            r.late = f"{lateness(late)} late" + (f": -{r.penalty:g} points" if r.penalty else ": no penalty")
        else:
            r.late = ""


def _safe_cell(value) -> str:
    """A CSV field that no spreadsheet runs as a formula."""
    text = boundary.clean_text(str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(path: Path, results: list[Result]) -> None:
    cell_ids = sorted({c.grade_id for r in results for c in r.cells})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["assignment", "student", "notebook", "submitted_as", "status", "reason", "score", "max_score",
                         "flags", "problems", "notes", "seconds", "timestamp", "late", "late_penalty", "final_score",
                         "overrides", *cell_ids])
        for r in sorted(results, key=lambda r: (r.assignment, r.student)):
            by_id = {c.grade_id: c.points for c in r.cells}
            row = [r.assignment, r.student, r.notebook, r.submitted_as, r.status, r.reason,
                   "" if r.score is None else r.score,
                   r.max_score, "; ".join(r.flags), "; ".join(r.problems), "; ".join(r.notes), r.seconds,
                   r.timestamp, r.late, r.penalty, "" if r.score is None else round(max(0.0, r.score - r.penalty), 4),
                   "; ".join(r.overrides), *["" if r.score is None else by_id.get(g, "") for g in cell_ids]]
            writer.writerow([v if isinstance(v, (int, float)) else _safe_cell(v) for v in row])


def write_reports(root: Path, db_url: str, assignment: str, mine: list[Result], also: list[str],
                  term=None) -> list[Result]:
    """Keep this run's results and rebuild grades.csv, report.html and results.json for the whole class."""
    from report import write_report

    out = root / "autograder" / "reports" / assignment
    out.mkdir(parents=True, exist_ok=True)
    for r in mine:
        save_result(out, r)
    whole = class_results(db_url, assignment, out, also, term)
    write_csv(out / "grades.csv", whole)
    write_report(out / "report.html", assignment, whole)
    (out / "results.json").write_text(json.dumps([asdict(r) | {"score": r.score, "max_score": r.max_score}
                                                  for r in whole], indent=1), encoding="utf-8")
    return whole


def merge_main(argv: list[str]) -> int:
    """``bash course.sh grade merge DIR...``: the shards' bundles into the gradebook and the class's reports."""
    from nbgrader.api import Gradebook

    parser = argparse.ArgumentParser(prog="bash course.sh grade merge",
                                     description="Merge the bundles of `grade --shard` into the course gradebook and "
                                                 "rebuild the class's reports (see autograder/bundles.py).")
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders written by `grade --shard ... --bundle`")
    parser.add_argument("--course", type=Path, default=HERE.parent, help="course root (default: this repository)")
    args = parser.parse_args(argv)
    root = args.course.resolve()
    db_path = root / "autograder" / "gradebook.db"
    db_url = f"sqlite:///{db_path}"
    if not db_path.is_file():
        parser.error(f"no gradebook at {db_path}: run `bash course.sh release` first")
    term = load_term(root)
    with Gradebook(db_url) as gb:
        known = {a.name: sorted(n.name for n in a.notebooks) for a in gb.assignments}
        test_ids = {(a, nb): [c.name for c in gb.find_notebook(nb, a).grade_cells if c.cell_type == "code"]
                    for a, nbs in known.items() for nb in nbs}
    infos, refused, unfinished = [], [], []
    for path in args.bundles:
        try:
            info = bundles.read_bundle(path, root)
        except bundles.Unfinished as exc:  # a shard that crashed: its students are reported as not graded yet
            unfinished.append(str(exc))
            continue
        except bundles.BundleError as exc:
            refused.append(str(exc))
            continue
        lacking = sorted(set(info.get("releases", {})) - set(known))
        if lacking:
            refused.append(f"{path}: grades {', '.join(lacking)}, which the gradebook does not have: run "
                           "`bash course.sh release` first")
            continue
        infos.append((path.absolute(), info))
    if refused:
        for line in refused:
            print(f"course.sh grade merge: refused: {line}", file=sys.stderr)
        print(f"course.sh grade merge: nothing was merged ({len(refused)} of {len(args.bundles)} bundles refused)",
              file=sys.stderr)
        return 2
    for line in unfinished:
        print(f"course.sh grade merge: {line}", file=sys.stderr)
    # A later run of a shard wins.
    infos.sort(key=lambda item: (float(item[1].get("created_unix", 0.0)), str(item[0])))
    merged: dict[str, dict[str, Result]] = {}
    everyone: dict[str, set[str]] = {}
    seen: dict[int, set[int]] = {}
    errors = 0
    for path, info in infos:
        total = int(info["shard"][1])
        seen.setdefault(total, set()).add(int(info["shard"][0]))
        for a, students in dict(info.get("students", {})).items():
            everyone.setdefault(a, set()).update(students)
        loaded = bundles.bundle_results(path, _load_result)
        for r in loaded:
            if (r.assignment, r.notebook) not in test_ids:
                r.status, r.reason = "grader error", f"the gradebook has no notebook {r.notebook} in {r.assignment}"
            else:
                try:
                    record(db_url, r, test_ids[(r.assignment, r.notebook)], root / "autograder" / "reports" / r.assignment,
                           term)
                    bundles.copy_outputs(path, root, r)
                except Exception as exc:  # noqa: BLE001 - one bad row must not lose the others
                    r.status = "grader error"
                    r.reason = boundary.keep_text(f"could not be written to the gradebook: {exc}", 1000)
            merged.setdefault(r.assignment, {})[r.student] = r
        if len(loaded) != int(info.get("count", len(loaded))):
            print(f"course.sh grade merge: {path} should hold {info.get('count')} results and {len(loaded)} could be "
                  "read: the students without one are reported as not graded", file=sys.stderr)
    # Every student of the class gets a row: one whose shard brought no result (a shard not merged, crashed, or
    # a result file lost) is not graded yet, never missing; one graded by an earlier merge or run keeps it.
    waiting = 0
    for a, students in everyone.items():
        saved = root / "autograder" / "reports" / a / "results"
        for student in sorted(students):
            if student in merged.get(a, {}):
                continue
            before = _load_result(_result_file(saved, student)) if _result_file(saved, student).is_file() else None
            if before is not None and not before.reason.startswith("not graded yet"):
                continue
            where = [f"{bundles.shard_of(student, a, t)}/{t}" for t in sorted(seen)]
            merged.setdefault(a, {})[student] = Result(
                student, a, (known.get(a) or ["?"])[0], "grader error",
                f"not graded yet: no merged bundle holds this student (shard {' or '.join(where)}): grade that shard "
                "with --shard and merge its bundle")
            waiting += 1
    for a in sorted(merged):
        mine = list(merged[a].values())
        whole = write_reports(root, db_url, a, mine, sorted(everyone.get(a, set())), term)
        errors += sum(1 for r in mine if r.status == "grader error")
        print(f"{a}: merged {len(mine)} students from {len(infos)} bundles; the class ({len(whole)} students): "
              f"{root / 'autograder' / 'reports' / a / 'report.html'}")
    for total, indices in seen.items():
        if missing := sorted(set(range(total)) - indices):
            print(f"course.sh grade merge: shards {', '.join(f'{i}/{total}' for i in missing)} have no bundle in "
                  f"this merge" + (f"; {waiting} students are reported as not graded yet" if waiting else ""),
                  file=sys.stderr)
    return 1 if errors or waiting or unfinished else 0


def report_main(argv: list[str]) -> int:
    """``bash course.sh grade report A|all``: rebuild the class's reports from what is recorded, grading nothing."""
    from nbgrader.api import Gradebook

    parser = argparse.ArgumentParser(prog="bash course.sh grade report",
                                     description="Rebuild grades.csv, report.html and results.json of an assignment "
                                                 "from the gradebook and earlier runs, grading nothing.")
    parser.add_argument("assignment", help="an assignment id or 'all'")
    parser.add_argument("--course", type=Path, default=HERE.parent, help="course root (default: this repository)")
    parser.add_argument("--submissions", type=Path, help="submissions folder (default: autograder/submitted)")
    args = parser.parse_args(argv)
    root = args.course.resolve()
    db_path = root / "autograder" / "gradebook.db"
    if not db_path.is_file():
        parser.error(f"no gradebook at {db_path}: run `bash course.sh release` first")
    db_url = f"sqlite:///{db_path}"
    with Gradebook(db_url) as gb:
        known = [a.name for a in gb.assignments]
    wanted = known if args.assignment == "all" else [args.assignment]
    for a in wanted:
        if a not in known:
            parser.error(f"assignment {a!r} is not in the gradebook ({', '.join(known) or 'none'})")
    term = load_term(root)
    submissions = (args.submissions or root / "autograder" / "submitted").absolute()
    everyone = student_names(submissions) if _is_real_dir(submissions) else []
    for a in wanted:
        whole = write_reports(root, db_url, a, [], everyone, term)
        print(f"{a}: the class ({len(whole)} students): {root / 'autograder' / 'reports' / a / 'report.html'}")
    return 0


def deploy_main(argv: list[str]) -> int:
    """``bash course.sh grade deploy k8s|slurm``: a Kubernetes Indexed Job or a Slurm array script for --shard."""
    parser = argparse.ArgumentParser(prog="bash course.sh grade deploy",
                                     description="Write a Kubernetes Indexed Job or a Slurm array script that grades "
                                                 "the class in shards (autograder/deploy/README.md).")
    parser.add_argument("kind", choices=sorted(bundles.TEMPLATES))
    parser.add_argument("assignment", help="an assignment id or 'all'")
    parser.add_argument("--shards", type=int, required=True, help="how many shards (pods, array tasks)")
    parser.add_argument("--bundles", required=True, help="a folder every node can write (a shared volume)")
    parser.add_argument("--checkout", default=str(HERE.parent), help="the course checkout's path on the nodes")
    parser.add_argument("--course", help="the course root on the nodes (default: the checkout)")
    parser.add_argument("--workers", type=int, default=2, help="submissions graded side by side per node (cores)")
    parser.add_argument("--image", default="", help="k8s: an image with the checkout, its venv and bubblewrap")
    parser.add_argument("--memory", default="", help="memory per node (default 8Gi / 8G)")
    parser.add_argument("--time", default="06:00:00", help="slurm: the time limit per task")
    parser.add_argument("--out", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    if args.shards < 1 or args.workers < 1:
        parser.error("--shards and --workers must be at least 1")
    try:
        values = bundles.deploy_values(args.assignment, args.shards, args.bundles, Path(args.checkout),
                                       Path(args.course or args.checkout), args.workers, args.image, args.memory,
                                       args.time, kind=args.kind)
    except ValueError as exc:
        parser.error(str(exc))
    text = bundles.render(args.kind, values)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


SETUP_HELP = ("Check that the course's virtual environment and data folder can be read by every user, that "
              "bubblewrap works (bwrap --ro-bind / / true), and see the log above; then grade again.")

SANDBOX_HELP = """\
bubblewrap is not available here, so the notebooks' code would run with your permissions: it could read
the solutions and the gradebook and change any file you can.
Install it (Debian/Ubuntu: apt install bubblewrap; it needs Linux with user namespaces), or, only for
submissions you trust, grade without a sandbox: bash course.sh grade ... --no-sandbox"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="an assignment id (01_computational_graphs) or 'all'")
    parser.add_argument("--course", type=Path, default=HERE.parent, help="course root (default: this repository)")
    parser.add_argument("--submissions", type=Path, help="submissions folder (default: autograder/submitted)")
    parser.add_argument("--students", help="comma-separated student ids (default: everyone found); the report "
                        "and the CSV still describe the whole class")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel submissions (default: cores)")
    parser.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    parser.add_argument("--total-timeout", type=float, default=Limits.total_timeout, help="seconds per submission")
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="address space per submission")
    parser.add_argument("--max-processes", type=int, default=Limits.max_processes, help="processes and threads")
    parser.add_argument("--output-kb", type=int, default=Limits.output_kb, help="output kept per cell")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="grade without bubblewrap: only for submissions you trust (limits still apply)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--shard", metavar="i/N", help="grade only shard i of N (counted from 0) of the (student, "
                        "assignment) pairs and write a bundle (--bundle) instead of the gradebook and reports; N alone "
                        "takes i from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm)")
    parser.add_argument("--bundle", metavar="DIR", help="with --shard: the folder for the shard's bundle ({shard} is "
                        "replaced by the shard's index); merge bundles with `bash course.sh grade merge DIR...`")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="grade on a Dask cluster (tcp://HOST:8786), one task "
                        "per submission; this process alone writes the gradebook (pip install the 'cluster' extra)")
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["merge"]:
        return merge_main(raw[1:])
    if raw[:1] == ["deploy"]:
        return deploy_main(raw[1:])
    if raw[:1] == ["report"]:
        return report_main(raw[1:])
    args = parser.parse_args(raw)
    shard = bundle = None
    if args.shard is not None or args.bundle is not None:
        if args.shard is None or args.bundle is None:
            parser.error("--shard and --bundle go together: a shard writes its results into a bundle, and "
                         "`bash course.sh grade merge` brings the bundles into the gradebook")
        if args.scheduler:
            parser.error("--shard and --scheduler are two ways to spread grading: use one")
        try:
            shard = bundles.parse_shard(args.shard)
        except bundles.ShardError as exc:
            parser.error(str(exc))
        bundle = Path(args.bundle.replace("{shard}", str(shard[0]))).absolute()

    from nbgrader.api import Gradebook

    root = args.course.resolve()
    db_path = root / "autograder" / "gradebook.db"
    db_url = f"sqlite:///{db_path}"
    submissions = (args.submissions or root / "autograder" / "submitted").absolute()
    if not _is_real_dir(submissions):
        parser.error(f"no submissions folder at {submissions}: collect submissions first (see the README)")
    if not db_path.is_file():
        parser.error(f"no gradebook at {db_path}: run `bash course.sh release` first")
    term = load_term(root)
    with Gradebook(db_url) as gb:
        known = [a.name for a in gb.assignments]
    wanted = known if args.assignment == "all" else [args.assignment]
    for a in wanted:
        if a not in known:
            parser.error(f"assignment {a!r} is not in the gradebook ({', '.join(known) or 'none'}): "
                         "run `bash course.sh release` first")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if bundle is not None:
        try:
            bundles.prepare_bundle(bundle, shard)
        except (bundles.BundleError, OSError) as exc:
            parser.error(str(exc))
    use_bwrap = not args.no_sandbox and bwrap_available()
    if not use_bwrap and not args.no_sandbox:
        print(f"course.sh grade: {SANDBOX_HELP}", file=sys.stderr)
        return 2
    is_root = os.getuid() == 0
    drop_uid = is_root and shutil.which("setpriv") is not None if use_bwrap else is_root
    if args.no_sandbox:
        print("warning: grading without a sandbox (--no-sandbox): the notebooks' code can read and change what "
              "an unprivileged user can" + ("" if is_root else " and everything you can") + ".", file=sys.stderr)
        if is_root:
            lease = UidLease()
            usable = interpreter_runs_as(lease.uid)
            lease.release()
            if not usable:
                print(f"course.sh grade: Python ({sys.prefix}) cannot be started by an unprivileged user, so "
                      "submissions cannot run without root's permissions. Install bubblewrap (apt install "
                      "bubblewrap), or install Python where every user can read it, or run the grader as a "
                      "non-root user.", file=sys.stderr)
                return 2
    limits = Limits(cell_timeout=args.cell_timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                    max_processes=args.max_processes, output_kb=args.output_kb)
    students = [s.strip() for s in args.students.split(",") if s.strip()] if args.students else None
    everyone = student_names(submissions)
    if students:
        bad = [s for s in students if "/" in s or "\\" in s or s.startswith(".")]
        if bad:
            parser.error(f"--students: {', '.join(map(repr, bad))} is not a student id (a folder name under "
                         f"{submissions})")
        with Gradebook(db_url) as gb:
            enrolled = {st.id for st in gb.students}
        unknown = [s for s in students if s not in everyone and s not in enrolled]
        for s_ in unknown:
            print(f"course.sh grade: no student {s_!r}: no folder under {submissions} and not in the gradebook "
                  "(skipped)", file=sys.stderr)
        students = [s for s in students if s not in unknown]
        if not students:
            return 1
    data = boundary.data_dir(root)
    tasks: list[Task] = []
    rows: list[Result] = []  # this run's rows that are not graded: missing, misnamed, not a folder
    found_students: dict[str, list[str]] = {}
    test_ids: dict[tuple[str, str], list[str]] = {}
    with Gradebook(db_url) as gb:
        notebooks = {a: sorted(n.name for n in gb.find_assignment(a).notebooks) for a in wanted}
        for a in wanted:
            for nb in notebooks[a]:
                test_ids[(a, nb)] = [c.name for c in gb.find_notebook(nb, a).grade_cells if c.cell_type == "code"]
    for a in wanted:
        found_students[a] = list(everyone)  # the report describes the whole class, whoever this run grades
        for found in discover(submissions, a, students, notebooks[a]):
            found_students[a].append(found.student)
            if shard is not None and bundles.shard_of(found.student, a, shard[1]) != shard[0]:
                continue  # another shard's
            rows += found.rows
            for path, nb in found.tasks:
                source = root / "solutions" / a / f"{nb}.ipynb"
                if not source.is_file():
                    rows.append(Result(found.student, a, nb, "grader error",
                                       f"no notebook {nb}.ipynb in solutions/{a}: run `bash course.sh release`"))
                    continue
                autograded = root / "autograder" / "autograded" / found.student / a
                log = root / "autograder" / "reports" / a / "logs" / f"{found.student}.log"
                if bundle is not None:
                    autograded, log = bundles.bundle_paths(bundle, found.student, a)
                tasks.append(Task(found.student, a, str(path), str(source), db_url, str(autograded), str(log),
                                  limits, use_bwrap, drop_uid, str(data) if data else None, nb))
    if shard is not None and not tasks and not rows:
        bundles.write_bundle(bundle, bundles.manifest(root, wanted, shard, found_students), [])
        print(f"shard {shard[0]}/{shard[1]}: no submissions fall to it; wrote an empty bundle to {bundle}")
        return 0
    if not tasks and not rows:
        print(f"no submissions for {', '.join(wanted)} under {submissions}", file=sys.stderr)
        return 1

    # The grader's own set-up, tried once before any submission: a failure here is never a student's.
    def sandbox_works() -> str:
        """'' when a sandbox starts with the course's packages and data, else what failed."""
        lease = None
        try:
            lease = UidLease() if drop_uid else None
            preflight(limits, uid=lease.uid if lease else None, use_bwrap=use_bwrap, data=data)
            return ""
        except (SandboxSetupError, OSError, RuntimeError, ValueError) as exc:
            return str(exc) if isinstance(exc, SandboxSetupError) else f"{type(exc).__name__}: {exc}"
        finally:
            if lease is not None:
                lease.release()

    if tasks and (failed := sandbox_works()):
        print(f"course.sh grade: stopped before grading anything: {failed}. {SETUP_HELP}", file=sys.stderr)
        return 3

    for r in rows if shard is None else []:  # not graded: an earlier score is not kept for a submission now misnamed
        if r.status in ("ungradable", "misnamed"):
            try:
                if record(db_url, r, test_ids[(r.assignment, r.notebook)], root / "autograder" / "reports" / r.assignment,
                          term):
                    _remove_stale_autograded(root / "autograder" / "autograded" / r.student / r.assignment)
            except Exception as exc:  # noqa: BLE001 - one bad row must not lose the others
                r.problems.append(boundary.keep_text(f"could not be written to the gradebook: {exc}", 300))

    from tqdm import tqdm

    _preload()
    started = time.monotonic()
    def set_up_failed(r: Result) -> bool:
        return r.status == "grader error" and r.reason.startswith("the grader's set-up failed")

    with tqdm(total=len(tasks), unit="submission", disable=args.quiet, file=sys.stderr) as bar:
        def done(result: Result, task: Task) -> None:
            try:
                if shard is None:  # a shard writes its bundle, never the gradebook
                    record(db_url, result, test_ids[(task.assignment, task.notebook)],
                           root / "autograder" / "reports" / task.assignment, term)
            except Exception as exc:  # noqa: BLE001 - one bad row must not lose the others
                result.status = "grader error"
                result.reason = boundary.keep_text(f"could not be written to the gradebook: {exc}", 1000)
            bar.set_postfix_str(f"{result.student[:20]}: {result.status}")
            bar.update()

        if args.scheduler:
            import cluster

            try:
                results = cluster.run_dask(tasks, args.scheduler, done)
            except cluster.ClusterError as exc:
                print(f"course.sh grade: {exc}", file=sys.stderr)
                return 2
            except Exception as exc:  # noqa: BLE001 - the cluster failed, not a student: say so, record no one else
                print(f"course.sh grade: grading on the Dask cluster at {args.scheduler} stopped: "
                      f"{type(exc).__name__}: {exc}. The submissions finished before it are in the gradebook; "
                      "grade again to finish the others (or grade here without --scheduler).", file=sys.stderr)
                return 3
        else:
            results = run_pool(tasks, min(args.workers, max(len(tasks), 1)), drop_uid, done, stop=set_up_failed)
        if not args.scheduler and any(set_up_failed(r) for r in results):
            # A sandbox did not start for a submission. If a fresh one does not start either, the grader's set-up
            # is broken: stop, recording no one for it. If it does (the machine was busy, a neighbour exhausted
            # it), grade what failed or was not started again, one at a time; what fails again is a grader error.
            if failed := sandbox_works():
                first = next(r for r in results if set_up_failed(r))
                print(f"course.sh grade: stopped: {first.reason}; a fresh sandbox fails too ({failed}). No "
                      f"submission was recorded for it. {SETUP_HELP}", file=sys.stderr)
                return 3
            finished = {(r.student, r.assignment, r.notebook) for r in results if not set_up_failed(r)}
            again = [t for t in tasks if (t.student, t.assignment, t.notebook) not in finished]
            results = [r for r in results if not set_up_failed(r)] + run_pool(again, 1, drop_uid, done)
    elapsed = time.monotonic() - started

    if shard is not None:
        bundles.write_bundle(bundle, bundles.manifest(root, wanted, shard, found_students), results + rows)
        errors = sum(1 for r in results + rows if r.status == "grader error")
        print(f"shard {shard[0]}/{shard[1]}: {len(results)} submissions graded in {elapsed:.1f} s, {len(rows)} rows "
              f"not graded (missing, misnamed, not a folder), {errors} grader errors; bundle: {bundle}. Merge the "
              "bundles with `bash course.sh grade merge DIR...`.")
        return 1 if errors else 0

    errors = 0
    for a in wanted:
        mine = [r for r in results + rows if r.assignment == a]
        whole = write_reports(root, db_url, a, mine, found_students.get(a, []), term)
        out = root / "autograder" / "reports" / a
        count = {k: sum(1 for r in mine if r.status == k) for k in NOT_GRADED}
        flagged = sum(1 for r in mine if r.flags)
        errors += count["grader error"]
        graded = len(mine) - sum(count.values())
        print(f"{a}: graded {graded} of {len(mine)} students in this run"
              + "".join(f", {n} {label}" for label, n in (
                  ("could not be graded", count["ungradable"]), ("missing", count["missing"]),
                  ("misnamed (not graded)", count["misnamed"]),
                  ("not graded because the grader failed (see the report)", count["grader error"])) if n)
              + (f", {flagged} flagged" if flagged else "")
              + f". The class ({len(whole)} students): {out / 'report.html'}")
    print(f"{len(results)} submissions in {elapsed:.1f} s with {min(args.workers, max(len(tasks), 1))} workers")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
