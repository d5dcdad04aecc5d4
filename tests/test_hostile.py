"""The grading command against hostile submissions (see tests/hostile.py).

The cases are split into two courses graded by two runs of the command at
the same time (as two instructors, or CI beside an instructor, would), each
run grading its half in parallel, an honest student in each. For each case:
the expected score (no unearned point), status, flags and notes; for the
batches: they complete, the honest student's grade is the same as when
graded alone, the gradebooks are intact, and every submitted file is
unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from instructor.scratch import ROOT, ScratchCourse
import hostile
from hostile import ASSIGNMENT, CASES, FULL

sys.path.insert(0, str(ROOT / "autograder"))
from sandbox.trusted import bwrap_available  # noqa: E402

pytestmark = pytest.mark.skipif(
    not bwrap_available(),
    reason="bubblewrap is not available here (apt install bubblewrap): without it the sandbox cannot hide files "
    "or the network, and a hostile submission could harm the machine running the tests",
)

NAME = f"{ASSIGNMENT}.ipynb"


def _hashes(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a file's hash, a link's target, a FIFO as such (nothing is followed)."""
    import os
    import stat

    out = {}
    for p in sorted(folder.rglob("*")):
        mode = os.lstat(p).st_mode
        if stat.S_ISLNK(mode):
            out[str(p.relative_to(folder))] = "link -> " + os.readlink(p)
        elif stat.S_ISFIFO(mode):
            out[str(p.relative_to(folder))] = "fifo"
        elif stat.S_ISREG(mode):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _command(course: ScratchCourse, *extra: str, assignment: str = ASSIGNMENT) -> list[str]:
    return [sys.executable, str(ROOT / "autograder" / "grade.py"), assignment, "--course", str(course.root),
            "--workers", "1", "--cell-timeout", "15", "--total-timeout", "60", "--quiet", *extra]


def _grade(course: ScratchCourse, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(course, *extra), capture_output=True, text=True, timeout=1200)


def _course(root: Path, cases, assignment: str = ASSIGNMENT) -> ScratchCourse:
    name = f"{assignment}.ipynb"
    course = ScratchCourse(root, course_config=True)
    course.add_source(assignment)
    course.generate(assignment)
    solution = nbformat.read(course.source_dir / assignment / name, as_version=4)
    release = nbformat.read(course.release_dir / assignment / name, as_version=4)
    for case in cases:
        built = case.build(nbformat.from_dict(solution), nbformat.from_dict(release), course.root)
        folder = course.submitted_dir / case.name / assignment
        if isinstance(built, bytes):
            folder.mkdir(parents=True)
            (folder / name).write_bytes(built)
        else:
            course.submit(case.name, assignment, built, name)
        if case.files is not None:
            case.files(folder, course.root)
    return course


OTHER_CHECKOUT = Path(hostile.OTHER_CHECKOUT)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Two courses, half of the cases each (an honest student in both), graded by two runs at once."""
    import os

    (OTHER_CHECKOUT / "solutions").mkdir(parents=True, exist_ok=True)
    (OTHER_CHECKOUT / "solutions" / "answers.ipynb").write_text("{}")
    honest = next(c for c in CASES if c.name == "honest")
    others = [c for c in CASES if c.name != "honest" and c.assignment == ASSIGNMENT]
    halves = [[honest, *others[0::2]], [honest, *others[1::2]], [c for c in CASES if c.assignment == hostile.RESNET]]
    assignments = [ASSIGNMENT, ASSIGNMENT, hostile.RESNET]
    courses = [_course(tmp_path_factory.mktemp(f"hostile{i}"), half, a)
               for i, (half, a) in enumerate(zip(halves, assignments))]
    before = [_hashes(c.submitted_dir) for c in courses]
    env = dict(os.environ, INSTRUCTOR_TOKEN="instructor-secret-token")
    runs = [subprocess.Popen(_command(c, assignment=a), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env) for c, a in zip(courses, assignments)]
    outputs = [run.communicate(timeout=1500)[0] for run in runs]
    results, where = {}, {}
    for course, half, assignment in zip(courses, halves, assignments):
        reports = course.root / "autograder" / "reports" / assignment
        for r in json.loads((reports / "results.json").read_text()):
            results.setdefault(r["student"], r)
            where.setdefault(r["student"], (course, reports))
    return {"courses": courses, "halves": halves, "runs": runs, "outputs": outputs, "results": results,
            "where": where, "before": before, "assignments": assignments,
            "honest": [json.loads((c.root / "autograder" / "reports" / ASSIGNMENT / "results.json").read_text())
                       for c in courses[:2]]}


def test_both_batches_complete_side_by_side(batch):
    for run, output in zip(batch["runs"], batch["outputs"]):
        assert run.returncode == 0, output
    assert set(batch["results"]) == {case.name for case in CASES}
    for course_results in batch["honest"]:  # the honest student of each run, graded beside the other run
        honest = next(r for r in course_results if r["student"] == "honest")
        assert honest["score"] == FULL and honest["status"] == "graded", honest


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_submission(batch, case):
    result = batch["results"][case.name]
    course, reports = batch["where"][case.name]
    log = (reports / "logs" / f"{case.name}.log").read_text()
    assert result["status"] in case.status, f"status {result['status']} ({result['reason']})\n{log}"
    assert result["score"] == case.score, f"score {result['score']}, expected {case.score}\n{log}"
    for phrase in case.flags:
        assert any(phrase in f for f in result["flags"]), f"no flag with {phrase!r} in {result['flags']}"
    said = result["notes"] + result["problems"]
    for phrase in case.notes:
        assert any(phrase in n for n in said), f"no note or problem with {phrase!r} in {said}"
    if case.score is None:
        assert result["reason"], "an ungradable submission must say why"
        assert "grader error" not in result["reason"], result["reason"]
    if case.no_flags:
        assert result["flags"] == [], result["flags"]
    assert len(result["flags"]) <= 40 and all(len(f) <= 200 for f in result["flags"])
    if case.output_has or case.output_lacks:
        nb = nbformat.read(course.autograded_dir / case.name / case.assignment / f"{case.assignment}.ipynb",
                           as_version=4)
        text = "\n".join(
            o.get("text", "") + o.get("ename", "") + ": " + o.get("evalue", "")
            for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        )
        for phrase in case.output_has:
            assert phrase in text, f"{phrase!r} not in the outputs"
        for phrase in case.output_lacks:
            assert phrase not in text, f"{phrase!r} in the outputs"
        assert len(text) < 2_000_000, "the autograded notebook keeps megabytes of output"


def test_no_flags_or_notes_on_the_honest_submission(batch):
    for course_results in batch["honest"]:
        honest = next(r for r in course_results if r["student"] == "honest")
        assert honest["flags"] == honest["notes"] == honest["problems"] == [] and honest["status"] == "graded"


def test_honest_grade_is_the_same_when_graded_alone(batch, tmp_path):
    course = ScratchCourse(tmp_path / "alone", course_config=True)
    course.add_source(ASSIGNMENT)
    course.generate(ASSIGNMENT)
    course.submit("honest", ASSIGNMENT, nbformat.read(course.source_dir / ASSIGNMENT / NAME, as_version=4), NAME)
    assert _grade(course).returncode == 0
    alone = course.cell_scores(ASSIGNMENT, "honest", ASSIGNMENT)
    for in_batch in (c.cell_scores(ASSIGNMENT, "honest", ASSIGNMENT) for c in batch["courses"][:2]):
        assert alone == in_batch and sum(s for s, _ in alone.values()) == FULL


def test_submitted_files_are_untouched(batch):
    assert [_hashes(c.submitted_dir) for c in batch["courses"]] == batch["before"]


def test_links_reach_nothing_outside_the_submission(batch):
    course, _ = batch["where"]["links_in_the_submission"]
    stamp = course.autograded_dir / "links_in_the_submission" / ASSIGNMENT / "timestamp.txt"
    assert not stamp.is_symlink() and not stamp.exists()


def test_gradebooks_are_intact_and_hold_the_batches(batch):
    for course, half, assignment in zip(batch["courses"], batch["halves"], batch["assignments"]):
        with sqlite3.connect(course.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for case in half:
            if case.score is not None:
                assert course.total(assignment, case.name)[0] == case.score
    assert not (ROOT / "vandal.txt").exists()
    assert not any((c.source_dir / "vandal.txt").exists() for c in batch["courses"])


def test_csv_and_report_say_why_nothing_is_silent(batch):
    for course, half, assignment in zip(batch["courses"], batch["halves"], batch["assignments"]):
        reports = course.root / "autograder" / "reports" / assignment
        with open(reports / "grades.csv", newline="") as f:
            rows = {r["student"]: r for r in csv.DictReader(f)}
        for case in half:
            row = rows[case.name]
            if case.score is None:
                assert row["status"] == "ungradable" and row["score"] == "" and row["reason"]
            else:
                assert float(row["score"]) == case.score
            for value in row.values():  # nothing a spreadsheet would run as a formula
                assert not value[:1] in ("=", "+", "@"), value
    html = "".join((c.root / "autograder" / "reports" / ASSIGNMENT / "report.html").read_text()
                   for c in batch["courses"][:2])
    assert "could not be graded" in html and "not_a_notebook" in html and "flag:" in html
    assert "test_sin_graph" in html and "&times;" in html  # per-exercise failure counts


def test_feedback_hides_hidden_tests_but_says_what_failed(batch):
    course, _ = batch["where"]["infinite_loop"]
    course.nbgrader("generate_feedback", ASSIGNMENT, "--student=infinite_loop")
    html = (course.feedback_dir / "infinite_loop" / ASSIGNMENT / NAME.replace(".ipynb", ".html")).read_text()
    assert "time limit" in html
    assert "overflow-wrap: anywhere" in html, "long messages wrap (WrapLongLines in autograder/nbgrader_config.py)"
    for secret in ("BEGIN HIDDEN TESTS", "load_reference", "default_rng(606)"):
        assert secret not in html


def _one_course(root: Path, students: dict[str, object]) -> ScratchCourse:
    course = ScratchCourse(root, course_config=True)
    course.add_source(ASSIGNMENT)
    course.generate(ASSIGNMENT)
    solution = nbformat.read(course.source_dir / ASSIGNMENT / NAME, as_version=4)
    for student, nb in students.items():
        course.submit(student, ASSIGNMENT, nb if nb is not None else solution, NAME)
    return course


def _grade_row(course: ScratchCourse, student: str):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db}") as gb:
        nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        return [(g.auto_score, g.needs_manual_grade) for g in nb.grades], nb.flagged


def test_a_failed_regrade_replaces_the_old_score(tmp_path):
    """A submission graded once, then resubmitted as something that cannot be graded: no old score stays."""
    course = _one_course(tmp_path / "c", {"ada": None})
    assert _grade(course).returncode == 0
    assert course.total(ASSIGNMENT, "ada")[0] == FULL
    assert (course.autograded_dir / "ada" / ASSIGNMENT / NAME).is_file()
    (course.submitted_dir / "ada" / ASSIGNMENT / NAME).write_text("{ not a notebook")
    assert _grade(course).returncode == 0
    grades, flagged = _grade_row(course, "ada")
    assert flagged and all(score is None and manual for score, manual in grades)
    assert course.total(ASSIGNMENT, "ada")[0] == 0
    assert not (course.autograded_dir / "ada" / ASSIGNMENT).exists()  # no feedback from the stale notebook
    with open(course.root / "autograder" / "reports" / ASSIGNMENT / "grades.csv", newline="") as f:
        assert next(csv.DictReader(f))["status"] == "ungradable"


DRIVER = """
import os, sys
sys.path.insert(0, {autograder!r})
import grade
original = grade.grade_submission

def dying(task):
    if task.student == "crasher":
        os._exit(9)  # the worker process dies, as if the machine had killed it
    return original(task)

grade.grade_submission = dying
sys.exit(grade.main(sys.argv[1:]))
"""


def test_a_dying_worker_costs_only_its_own_submission(tmp_path):
    course = _one_course(tmp_path / "c", {"ada": None, "crasher": None, "grace": None})
    assert _grade(course).returncode == 0  # a first grading: the crasher has full marks in the gradebook
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(autograder=str(ROOT / "autograder")))
    run = subprocess.run([sys.executable, str(driver), *_command(course)[2:], "--workers", "2"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    results = {r["student"]: r for r in json.loads(
        (course.root / "autograder" / "reports" / ASSIGNMENT / "results.json").read_text())}
    assert results["ada"]["score"] == results["grace"]["score"] == FULL
    assert results["crasher"]["status"] == "ungradable" and "worker died" in results["crasher"]["reason"]
    grades, flagged = _grade_row(course, "crasher")
    assert flagged and all(score is None for score, _ in grades)


def test_without_bubblewrap_the_command_refuses_and_says_what_to_do(tmp_path):
    import os

    course = _one_course(tmp_path / "c", {"ada": None})
    env = dict(os.environ, PATH="/nonexistent")
    run = subprocess.run(_command(course), capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "apt install bubblewrap" in run.stderr and "--no-sandbox" in run.stderr
    assert "Traceback" not in run.stderr
    if os.getuid() == 0:
        from sandbox.trusted import UidLease, interpreter_runs_as

        lease = UidLease(tmp_path / "leases")
        readable = interpreter_runs_as(lease.uid)
        lease.release()
        run = subprocess.run(_command(course, "--no-sandbox"), capture_output=True, text=True, env=env, timeout=600)
        if readable:
            assert run.returncode == 0 and course.total(ASSIGNMENT, "ada")[0] == FULL
        else:  # Python in a private home (pyenv under /root): an unprivileged id cannot start it
            assert run.returncode == 2 and "cannot be started by an unprivileged user" in run.stderr
