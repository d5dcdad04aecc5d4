"""The grading command against hostile submissions (see tests/hostile.py).

One batch grades every case at once, in parallel, the honest student among
them. For each case: the expected score (no unearned point), status, flags
and notes; for the batch: it completes, the honest student's grade is the
same as when graded alone, the gradebook is intact, and every submitted file
is unchanged.
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

from goingdeeper.scratch import ROOT, ScratchCourse
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
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _grade(course: ScratchCourse, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "autograder" / "grade.py"), ASSIGNMENT, "--course", str(course.root),
         "--workers", "2", "--cell-timeout", "15", "--total-timeout", "60", "--quiet", *extra],
        capture_output=True, text=True, timeout=1200,
    )


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course = ScratchCourse(tmp_path_factory.mktemp("hostile"), course_config=True)
    course.add_source(ASSIGNMENT)
    course.generate(ASSIGNMENT)
    solution = nbformat.read(course.source_dir / ASSIGNMENT / NAME, as_version=4)
    release = nbformat.read(course.release_dir / ASSIGNMENT / NAME, as_version=4)
    for case in CASES:
        built = case.build(nbformat.from_dict(solution), nbformat.from_dict(release), course.root)
        if isinstance(built, bytes):
            folder = course.submitted_dir / case.name / ASSIGNMENT
            folder.mkdir(parents=True)
            (folder / NAME).write_bytes(built)
        else:
            course.submit(case.name, ASSIGNMENT, built, NAME)
    before = _hashes(course.submitted_dir)
    run = _grade(course)
    reports = course.root / "autograder" / "reports" / ASSIGNMENT
    results = {r["student"]: r for r in json.loads((reports / "results.json").read_text())}
    return {"course": course, "run": run, "results": results, "before": before, "reports": reports}


def test_the_batch_completes(batch):
    run = batch["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(batch["results"]) == {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_submission(batch, case):
    result = batch["results"][case.name]
    log = (batch["reports"] / "logs" / f"{case.name}.log").read_text()
    assert result["status"] in case.status, f"status {result['status']} ({result['reason']})\n{log}"
    assert result["score"] == case.score, f"score {result['score']}, expected {case.score}\n{log}"
    for phrase in case.flags:
        assert any(phrase in f for f in result["flags"]), f"no flag with {phrase!r} in {result['flags']}"
    said = result["notes"] + result["problems"]
    for phrase in case.notes:
        assert any(phrase in n for n in said), f"no note or problem with {phrase!r} in {said}"
    if case.score is None:
        assert result["reason"], "an ungradable submission must say why"
    if case.output_has or case.output_lacks:
        nb = nbformat.read(batch["course"].autograded_dir / case.name / ASSIGNMENT / NAME, as_version=4)
        text = "\n".join(
            o.get("text", "") + o.get("ename", "") + ": " + o.get("evalue", "")
            for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        )
        for phrase in case.output_has:
            assert phrase in text, f"{phrase!r} not in the outputs"
        assert len(text) < 2_000_000, "the autograded notebook keeps megabytes of output"


def test_no_flags_or_notes_on_the_honest_submission(batch):
    honest = batch["results"]["honest"]
    assert honest["flags"] == honest["notes"] == honest["problems"] == [] and honest["status"] == "graded"


def test_honest_grade_is_the_same_when_graded_alone(batch, tmp_path):
    course = ScratchCourse(tmp_path / "alone", course_config=True)
    course.add_source(ASSIGNMENT)
    course.generate(ASSIGNMENT)
    course.submit("honest", ASSIGNMENT, nbformat.read(course.source_dir / ASSIGNMENT / NAME, as_version=4), NAME)
    assert _grade(course, "--workers", "1").returncode == 0
    alone = course.cell_scores(ASSIGNMENT, "honest", ASSIGNMENT)
    in_batch = batch["course"].cell_scores(ASSIGNMENT, "honest", ASSIGNMENT)
    assert alone == in_batch and sum(s for s, _ in alone.values()) == FULL


def test_submitted_files_are_untouched(batch):
    assert _hashes(batch["course"].submitted_dir) == batch["before"]


def test_gradebook_is_intact_and_holds_the_batch(batch):
    course = batch["course"]
    with sqlite3.connect(course.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for case in CASES:
        if case.score is not None:
            assert course.total(ASSIGNMENT, case.name)[0] == case.score
    assert not (course.source_dir / "vandal.txt").exists() and not (ROOT / "vandal.txt").exists()


def test_csv_and_report_say_why_nothing_is_silent(batch):
    with open(batch["reports"] / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    for case in CASES:
        row = rows[case.name]
        if case.score is None:
            assert row["status"] == "ungradable" and row["score"] == "" and row["reason"]
        else:
            assert float(row["score"]) == case.score
    html = (batch["reports"] / "report.html").read_text()
    assert "could not be graded" in html and "not_a_notebook" in html and "flag:" in html
    assert "test_sin_graph" in html and "&times;" in html  # per-exercise failure counts


def test_feedback_hides_hidden_tests_but_says_what_failed(batch):
    course = batch["course"]
    course.nbgrader("generate_feedback", ASSIGNMENT, "--student=infinite_loop")
    html = (course.feedback_dir / "infinite_loop" / ASSIGNMENT / NAME.replace(".ipynb", ".html")).read_text()
    assert "time limit" in html
    for secret in ("BEGIN HIDDEN TESTS", "load_reference", "default_rng(606)"):
        assert secret not in html
