"""Grades that hold anywhere (issue 16): every student gets a row, a regrade keeps the class, a course in a
path under /tmp or with spaces grades, and a failure of the grader's own set-up is never a student's."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from instructor.scratch import ROOT, ScratchCourse

sys.path.insert(0, str(ROOT / "autograder"))
from sandbox.trusted import bwrap_available  # noqa: E402

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not available here "
                                "(apt install bubblewrap): the grading command refuses to run without it")

A = "01_computational_graphs"
NAME = f"{A}.ipynb"


def _course(root: Path) -> tuple[ScratchCourse, nbformat.NotebookNode]:
    course = ScratchCourse(root, course_config=True)
    course.add_source(A)
    course.generate(A)
    return course, nbformat.read(course.source_dir / A / NAME, as_version=4)


def _grade(course: ScratchCourse, *extra: str, driver: Path | None = None, env=None):
    program = [str(driver)] if driver else [str(ROOT / "autograder" / "grade.py")]
    return subprocess.run([sys.executable, *program, A, "--course", str(course.root), "--workers", "2", "--quiet",
                           *extra], capture_output=True, text=True, timeout=900, env=env)


def _rows(course: ScratchCourse) -> dict[str, dict]:
    with open(course.root / "autograder" / "reports" / A / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_every_student_has_a_row_whatever_the_file_is_called_and_a_regrade_keeps_the_class(tmp_path):
    course, solution = _course(tmp_path / "a course with spaces")
    course.submit("ada", A, solution, NAME)
    course.submit("bob", A, solution, f"{A} (1).ipynb")  # a browser's second download
    (course.submitted_dir / "bob" / A / f"._{A} (1).ipynb").write_bytes(b"\x00\x05macOS metadata")
    (course.submitted_dir / ".DS_Store").write_bytes(b"\x00")
    (course.submitted_dir / "__MACOSX").mkdir()
    (course.submitted_dir / "README.txt").write_text("not a student")
    (course.submitted_dir / "cy" / A).mkdir(parents=True)
    (course.submitted_dir / "cy" / A / "answers.txt").write_text("my answers")
    course.submit("dan", A, solution, "first try.ipynb")
    course.submit("dan", A, solution, "second try.ipynb")
    (course.submitted_dir / "eve").mkdir()
    marked = nbformat.from_dict(solution)
    answer = next(c for c in marked.cells if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source += "\n# ### BEGIN HIDDEN TESTS (a student's comment, not a marker)\n"
    course.submit("fay", A, marked, NAME)
    run = _grade(course)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = _rows(course)
    assert set(rows) == {"ada", "bob", "cy", "dan", "eve", "fay"}
    full = float(rows["ada"]["score"])
    assert full > 0 and rows["ada"]["status"] == "graded"
    assert rows["bob"]["status"] == "graded" and float(rows["bob"]["score"]) == full
    assert rows["bob"]["submitted_as"] == f"{A} (1).ipynb" and "the only notebook" in rows["bob"]["notes"]
    assert rows["cy"]["status"] == "missing" and "answers.txt" in rows["cy"]["reason"]
    assert rows["dan"]["status"] == "misnamed" and "first try.ipynb" in rows["dan"]["reason"]
    assert rows["dan"]["score"] == "" and "Rename" in rows["dan"]["reason"]
    assert rows["eve"]["status"] == "missing"
    assert course.total(A, "bob")[0] == full  # in the gradebook, so nbgrader export and feedback see it
    assert (course.autograded_dir / "bob" / A / NAME).is_file()
    exported = course.nbgrader("export", "--to", str(tmp_path / "grades.csv"))
    with open(tmp_path / "grades.csv", newline="") as f:
        assert {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}["bob"] == full, exported.stdout

    # Feedback for an answer that contains the hidden-tests marker: made, with the student's text as written.
    assert float(rows["fay"]["score"]) == full
    course.nbgrader("generate_feedback", A, "--student=fay")
    page = (course.feedback_dir / "fay" / A / NAME.replace(".ipynb", ".html")).read_text()
    assert "a student&#39;s comment, not a marker" in page or "a student's comment, not a marker" in page
    assert "load_reference" not in page  # the course's hidden tests are still cut

    # A run that grades nothing (only a student with no submission), and one for a student who does not exist.
    run = _grade(course, "--students", "eve")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert set(_rows(course)) == set(rows)
    run = _grade(course, "--students", "ghost")
    assert run.returncode == 1 and "no student 'ghost'" in run.stderr and "Traceback" not in run.stderr
    run = _grade(course, "--students", "../x")
    assert run.returncode == 2 and "not a student id" in run.stderr

    # Regrading one student: the report and the CSV still describe the whole class.
    course.submit("ada", A, nbformat.read(course.release_dir / A / NAME, as_version=4), NAME)  # now unanswered
    run = _grade(course, "--students", "ada")
    assert run.returncode == 0, run.stdout + run.stderr
    again = _rows(course)
    assert set(again) == set(rows) and float(again["ada"]["score"]) < full
    assert {k: (v["status"], v["score"]) for k, v in again.items() if k != "ada"} == \
        {k: (v["status"], v["score"]) for k, v in rows.items() if k != "ada"}
    # bob's folder now holds two notebooks, neither with the name: his earlier score is not kept.
    course.submit("bob", A, solution, "other.ipynb")
    run = _grade(course, "--students", "bob")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _rows(course)["bob"]["status"] == "misnamed" and course.total(A, "bob")[0] == 0
    assert not (course.autograded_dir / "bob" / A).exists()
    html = (course.root / "autograder" / "reports" / A / "report.html").read_text()
    assert all(name in html for name in rows) and "6 students" in html
    assert len(json.loads((course.root / "autograder" / "reports" / A / "results.json").read_text())) == 6


PREFLIGHT = """
import sys
from pathlib import Path
sys.path.insert(0, {autograder!r})
from sandbox.trusted import Limits, preflight
preflight(Limits(), uid=None, use_bwrap=True, data=Path({data!r}))
print("sandbox ok")
"""


def test_a_venv_and_data_under_tmp_are_visible_in_the_sandbox(tmp_path):
    """The sandbox mounts its own /tmp: a course's venv or data folder under /tmp must stay visible on top."""
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "a venv" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(Path(sys.prefix))  # sys.prefix is then this path under /tmp, as a venv made there would be
    data = tmp_path / "my data"
    data.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(PREFLIGHT.format(autograder=str(ROOT / "autograder"), data=str(data)))
    run = subprocess.run([str(venv / "bin" / "python"), str(script)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "sandbox ok" in run.stdout, run.stdout + run.stderr


BROKEN = """
import sys
sys.path.insert(0, {autograder!r})
import grade
from sandbox import boundary, trusted
boundary.python_paths = lambda package: []  # the sandbox sees no Python: as under /tmp before the fix
if {skip_preflight}:  # the first check passes: the failure then shows at the first submission, and the check
    real, calls = grade.preflight, []  # made then (a fresh sandbox) fails too

    def once(*a, **k):
        calls.append(1)
        return None if len(calls) == 1 else real(*a, **k)

    grade.preflight = once
sys.exit(grade.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("skip_preflight", [False, True], ids=["before_grading", "at_the_first_submission"])
def test_a_sandbox_that_cannot_start_stops_grading_and_records_no_student(tmp_path, skip_preflight):
    if not str(Path(sys.prefix).resolve()).startswith(("/work", "/root", "/home", "/tmp", "/opt")):
        pytest.skip("the venv lies in a system folder the sandbox always shows")
    course, solution = _course(tmp_path / "c")
    for student in ("ada", "bob", "cy"):
        course.submit(student, A, solution, NAME)
    driver = tmp_path / "driver.py"
    driver.write_text(BROKEN.format(autograder=str(ROOT / "autograder"), skip_preflight=skip_preflight))
    run = _grade(course, driver=driver)
    assert run.returncode == 3, run.stdout + run.stderr
    said = run.stderr.strip().splitlines()[-1]
    assert "could not start" in said and "No submission" in said or "before grading anything" in said, said
    assert "Traceback" not in run.stderr
    import sqlite3

    with sqlite3.connect(course.db) as db:
        assert db.execute("select count(*) from submitted_assignment").fetchone()[0] == 0
    assert not (course.root / "autograder" / "reports" / A / "grades.csv").exists()
