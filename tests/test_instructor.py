"""The instructor workflow in the README, with the course's own nbgrader configuration.

A scratch copy of the course (its autograder/nbgrader_config.py, its
solutions) goes through: release, add students, copy submissions in,
autograde, feedback, export to CSV. A student who deleted a test cell is
still graded by it (OverwriteCells.add_missing_cells).
"""

from __future__ import annotations

import csv
import shutil

import nbformat
import pytest

from instructor.course import assignments
from instructor.scratch import ROOT, ScratchCourse, graded_cells

ASSIGNMENT = assignments()[0]


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    course = ScratchCourse(tmp_path_factory.mktemp("instructor"), course_config=True)
    course.add_source(ASSIGNMENT)
    course.generate(ASSIGNMENT)
    course.nbgrader("db", "student", "add", "ada", "--first-name=Ada", "--last-name=Lovelace")
    course.nbgrader("db", "student", "add", "alan", "--first-name=Alan", "--last-name=Turing")
    (name,) = [p.name for p in (course.release_dir / ASSIGNMENT).glob("*.ipynb")]
    solution = nbformat.read(course.source_dir / ASSIGNMENT / name, as_version=4)
    # Ada submits the solution but deleted one test cell; Alan hands in the release untouched.
    deleted = "test_engine_backward"
    solution.cells = [c for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade_id") != deleted]
    course.submit("ada", ASSIGNMENT, solution, name)
    (course.submitted_dir / "alan" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(course.release_dir / ASSIGNMENT / name, course.submitted_dir / "alan" / ASSIGNMENT / name)
    course.nbgrader("autograde", ASSIGNMENT)
    course.nbgrader("generate_feedback", ASSIGNMENT)
    export = course.root / "grades.csv"
    course.nbgrader("export", f"--to={export}")
    return {"course": course, "name": name, "deleted": deleted, "export": export}


def test_release_goes_to_notebooks(cycle):
    assert (cycle["course"].release_dir / ASSIGNMENT / cycle["name"]).is_file()
    assert cycle["course"].release_dir.name == "notebooks"


def test_deleted_test_cell_is_restored_and_graded(cycle):
    course, name = cycle["course"], cycle["name"]
    autograded = course.autograded_notebook(ASSIGNMENT, "ada", name)
    assert cycle["deleted"] in graded_cells(autograded)
    score, max_score = course.total(ASSIGNMENT, "ada")
    assert score == max_score > 0


def test_export_csv_has_every_student(cycle):
    with open(cycle["export"], newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}
    assert set(rows) == {"ada", "alan"}
    assert float(rows["ada"]["score"]) == float(rows["ada"]["max_score"]) > 0
    assert float(rows["alan"]["score"]) == 0


def test_feedback_explains_failures_without_hidden_source(cycle):
    course, name = cycle["course"], cycle["name"]
    html = (course.feedback_dir / "alan" / ASSIGNMENT / name.replace(".ipynb", ".html")).read_text()
    assert "not implemented yet" in html  # what failed, in words
    for secret in ("BEGIN HIDDEN TESTS", "load_reference", "default_rng(606)"):
        assert secret not in html, f"feedback leaks hidden test source ({secret})"


def test_course_config_points_at_this_layout():
    text = (ROOT / "autograder" / "nbgrader_config.py").read_text()
    assert 'source_directory = "solutions"' in text
    assert 'release_directory = "notebooks"' in text
    assert "add_missing_cells = True" in text
