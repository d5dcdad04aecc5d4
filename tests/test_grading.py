"""Every assignment, graded by nbgrader as an outsider would (default configuration).

One autograde run per assignment grades, as separate students: the solution,
the untouched release, and every wrong implementation in ``tests/wrong``.
The tests then read the gradebook:

* the solution scores full marks (so every visible and hidden test passes);
* the release scores zero, cell by cell (every autograded test fails on it);
* each wrong implementation makes its own test cell score 0, with a failure
  message that names the mistake;
* test cells write nothing to stderr, and failures are reported in words.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from instructor.course import assignments
from instructor.scratch import ROOT, ScratchCourse, answer_ids, graded_cells, replace_cell
from answer_key import answer_key
from packing import pack
from scribble import scribbler
from wrong import by_assignment, right_by_assignment

WRONG = by_assignment()
RIGHT = right_by_assignment()


def _student(group: int) -> str:
    return f"wrong{group:02d}"


def _apply(solution, wrongs, group):
    nb = solution
    for i in group:
        nb = replace_cell(nb, wrongs[i].answer, wrongs[i].source.strip())
    return nb


@pytest.fixture(scope="module", params=assignments())
def graded(request, tmp_path_factory):
    assignment = request.param
    course = ScratchCourse(tmp_path_factory.mktemp(f"course-{assignment}"))
    course.add_source(assignment)
    release_dir = course.generate(assignment)
    (name,) = [p.name for p in (course.source_dir / assignment).glob("*.ipynb")]
    solution = nbformat.read(course.source_dir / assignment / name, as_version=4)
    release = nbformat.read(release_dir / name, as_version=4)
    course.submit("solution", assignment, solution, name)
    course.submit("release", assignment, release, name)
    course.submit("scribbler", assignment, scribbler(solution), name)
    course.submit("answerkey", assignment, answer_key(assignment, solution), name)
    wrongs = WRONG.get(assignment, [])
    groups = pack(wrongs, solution)  # wrong versions of unrelated answers share a submission
    for g, group in enumerate(groups):
        course.submit(_student(g), assignment, _apply(solution, wrongs, group), name)
    student_of = {i: _student(g) for g, group in enumerate(groups) for i in group}
    # Right versions share submissions too: the k-th right version of every answer goes into submission k
    # (right answers of different answers cannot make each other wrong).
    rights = RIGHT.get(assignment, [])
    right_student: dict[int, str] = {}
    for i, right in enumerate(rights):
        right_student[i] = f"right{sum(r.answer == right.answer for r in rights[:i]):02d}"
    for student in sorted(set(right_student.values())):
        nb = solution
        for i, right in enumerate(rights):
            if right_student[i] == student:
                nb = replace_cell(nb, right.answer, right.source.strip())
        course.submit(student, assignment, nb, name)
    # The same submissions, graded by our command in a course with our layout. nbgrader's autograde runs one
    # notebook at a time (one core); ours runs beside it with one worker on the other core.
    ours = ScratchCourse(tmp_path_factory.mktemp(f"ours-{assignment}"), course_config=True)
    ours.add_source(assignment)
    ours.generate(assignment)
    for student_dir in sorted(course.submitted_dir.iterdir()):
        ours.submit(student_dir.name, assignment, nbformat.read(student_dir / assignment / name, as_version=4), name)
    ours_run = subprocess.Popen([sys.executable, str(ROOT / "autograder" / "grade.py"), assignment, "--course",
                                 str(ours.root), "--quiet", "--workers", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        course.autograde(assignment)
    finally:
        ours_output = ours_run.communicate(timeout=3600)[0]
    return {
        "assignment": assignment, "course": course, "name": name, "solution": solution,
        "release": release, "wrongs": wrongs, "rights": rights, "right_student": right_student, "groups": groups,
        "student_of": student_of,
        "ours": ours, "ours_run": (ours_run.returncode, ours_output),
    }


def _outputs_text(cell) -> tuple[str, str]:
    """(stderr text, error text) of one executed cell."""
    stderr = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    errors = "".join(o.get("ename", "") + ": " + o.get("evalue", "") for o in cell.outputs if o.output_type == "error")
    return stderr, errors


def test_solution_scores_full_marks(graded):
    course, a, name = graded["course"], graded["assignment"], graded["name"]
    scores = course.cell_scores(a, "solution", Path(name).stem)
    short = {gid: s for gid, s in scores.items() if s[0] != s[1]}
    assert not short, f"the solution loses points in {short}"
    score, max_score = course.total(a, "solution")
    assert score == max_score > 0


def test_tests_compute_their_expected_values_before_calling_the_student(graded, ours):
    """A correct answer that overwrites its array arguments with NaN after computing still earns every point.

    So no test derives an expected value from its own arrays after the student's code had them, nor hands
    the same arrays on to a second call (tests/scribble.py).
    """
    a, stem = graded["assignment"], Path(graded["name"]).stem
    for course in (graded["course"], ours):
        scores = course.cell_scores(a, "scribbler", stem)
        short = {gid: s for gid, s in scores.items() if s[0] != s[1]}
        assert not short, f"the scribbling solution loses points in {short}"


def test_right_answers_written_differently_earn_full_marks_in_both_graders(graded, ours):
    """Whatever plain Python and numpy accept as the stated type grades as nbgrader grades it (issue 8, item 12)."""
    a, stem = graded["assignment"], Path(graded["name"]).stem
    problems = []
    for i, right in enumerate(graded["rights"]):
        for label, course in (("nbgrader", graded["course"]), ("ours", ours)):
            scores = course.cell_scores(a, graded["right_student"][i], stem)
            short = {gid: s for gid, s in scores.items() if s[0] != s[1]}
            if short:
                problems.append(f"{right.answer} ({right.how}) loses points with {label}: {short}")
    assert not problems, "\n".join(problems)


def test_an_answer_key_made_of_the_course_package_scores_zero_and_is_flagged(graded, ours):
    """Every answer replaced by calls into what the course installs (tests/answer_key.py): 0 in every cell of
    both graders, each with the own-work rule's message, and our report flags the submission."""
    import json

    a, name = graded["assignment"], graded["name"]
    rule = "may not call, subclass, import, exec or read the source of the course's own package"
    problems = []
    for label, course in (("nbgrader", graded["course"]), ("ours", ours)):
        scores = course.cell_scores(a, "answerkey", Path(name).stem)
        problems += [f"{label}: {gid} scores {s[0]}" for gid, s in scores.items() if s[0] != 0]
        for gid, cell in graded_cells(course.autograded_notebook(a, "answerkey", name)).items():
            _, errors = _outputs_text(cell)
            if rule not in errors:
                problems.append(f"{label}: {gid} does not give the rule's message: {errors[:200]}")
    assert not problems, "\n".join(problems)
    results = json.loads((ours.root / "autograder" / "reports" / a / "results.json").read_text())
    (key,) = [r for r in results if r["student"] == "answerkey"]
    assert any("not the student's own work" in f for f in key["flags"]), key["flags"]


def test_release_scores_zero_in_every_cell(graded):
    course, a, name = graded["course"], graded["assignment"], graded["name"]
    scores = course.cell_scores(a, "release", Path(name).stem)
    assert scores, "no graded cells"
    earning = {gid: s for gid, s in scores.items() if s[0] != 0}
    assert not earning, f"the untouched release earns points in {earning}"
    assert course.total(a, "release")[0] == 0


def test_assignment_has_enough_graded_and_hidden_tests(graded):
    tests = graded_cells(graded["solution"])
    hidden = [gid for gid, c in tests.items() if "### BEGIN HIDDEN TESTS" in c.source]
    assert len(tests) >= 6, f"only {len(tests)} graded test cells"
    assert len(hidden) >= 2, f"only {len(hidden)} test cells hold hidden tests"
    for gid, cell in tests.items():
        first = cell.source.lstrip().splitlines()[0]
        assert first.startswith('"""'), f"{gid} should open with a one-line string saying what it checks"


def test_every_answer_has_a_test_and_a_wrong_version(graded):
    tests = graded_cells(graded["solution"])
    answers = answer_ids(graded["solution"])
    covered = {w.answer for w in graded["wrongs"]}
    for answer in answers:
        assert f"test_{answer}" in tests, f"answer cell {answer} has no test cell test_{answer}"
        assert answer in covered, f"no wrong implementation of {answer} in tests/wrong"


def test_test_cells_are_silent_on_stderr(graded):
    course, a, name = graded["course"], graded["assignment"], graded["name"]
    for student in ["solution", "release", "scribbler", "answerkey"] + [_student(g) for g in range(len(graded["groups"]))]:
        nb = course.autograded_notebook(a, student, name)
        for gid, cell in graded_cells(nb).items():
            stderr, _ = _outputs_text(cell)
            assert not stderr, f"{student}: test cell {gid} wrote to stderr: {stderr[:300]}"


def test_wrong_implementations_are_rejected_with_feedback(graded):
    course, a, name = graded["course"], graded["assignment"], graded["name"]
    problems = []
    for i, wrong in enumerate(graded["wrongs"]):
        student = graded["student_of"][i]
        test_id = f"test_{wrong.answer}"
        score, _ = course.cell_scores(a, student, Path(name).stem)[test_id]
        if score != 0:
            problems.append(f"{wrong.answer} ({wrong.mistake}): {test_id} still scores {score}")
            continue
        cell = graded_cells(course.autograded_notebook(a, student, name))[test_id]
        _, errors = _outputs_text(cell)
        if "CheckFailed" not in errors or wrong.feedback not in errors:
            problems.append(
                f"{wrong.answer} ({wrong.mistake}): the message should say '{wrong.feedback}', got: {errors[:400]}"
            )
    assert not problems, "\n".join(problems)



@pytest.fixture(scope="module")
def ours(graded):
    """The same submissions graded by our command (autograder/grade.py), run beside nbgrader's autograde."""
    returncode, output = graded["ours_run"]
    assert returncode == 0, output
    return graded["ours"]


def test_our_grader_agrees_with_nbgrader_cell_by_cell(graded, ours):
    """Same verdict for every cell of the solution, the release and every wrong implementation."""
    a, stem = graded["assignment"], Path(graded["name"]).stem
    students = (["solution", "release", "scribbler", "answerkey"] + [_student(g) for g in range(len(graded["groups"]))]
                + sorted(set(graded["right_student"].values())))
    disagreements = {}
    for student in students:
        theirs = graded["course"].cell_scores(a, student, stem)
        mine = ours.cell_scores(a, student, stem)
        if theirs != mine:
            disagreements[student] = {g: (theirs[g], mine.get(g)) for g in theirs if theirs[g] != mine.get(g)}
    assert not disagreements, disagreements


def test_our_feedback_carries_the_same_failure_messages(graded, ours):
    a, name = graded["assignment"], graded["name"]
    for i, wrong in enumerate(graded["wrongs"]):
        cell = graded_cells(ours.autograded_notebook(a, graded["student_of"][i], name))[f"test_{wrong.answer}"]
        _, errors = _outputs_text(cell)
        assert wrong.feedback in errors, f"{wrong.answer} ({wrong.mistake}): {errors[:300]}"
