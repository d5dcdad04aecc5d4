"""The term's rules one by one (issue 20): penalties, term.toml's errors, roster files, feedback's filters.

Fast: no grading. tests/test_term.py runs them all together on a class of 30.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from instructor.feedback import HIDDEN_NOTE, hide_expected, leaks
from instructor.lms import RosterError, _number, read_roster
from instructor.term import Penalty, TermError, load_term

DAY = 86400


@pytest.mark.parametrize("seconds, percent", [
    (0, 0), (1, 10), (DAY, 10), (DAY + 1, 20), (4 * DAY, 40), (6 * DAY, 50), (7 * DAY, 50), (7 * DAY + 1, 100)])
def test_per_day_penalty_counts_started_days_up_to_the_cap_then_zero_after_the_cutoff(seconds, percent):
    penalty = Penalty("per_day", percent_per_day=10, cap_percent=50, zero_after_days=7)
    assert penalty.points(8.0, seconds) == pytest.approx(8.0 * percent / 100)


def test_other_penalty_methods():
    assert Penalty("zero").points(8.0, 1) == 8.0 and Penalty("zero").points(8.0, 0) == 0
    assert Penalty("none").points(8.0, 30 * DAY) == 0
    assert Penalty("none", zero_after_days=2).points(8.0, 2 * DAY + 1) == 8.0  # late accepted for 2 days, then 0
    assert Penalty("per_day", 10).points(0.0, DAY) == 0  # nothing to take


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "term.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_term_reads_dates_in_its_time_zone_and_extensions_as_dates_or_lengths(tmp_path):
    term = load_term(_toml(tmp_path, """
timezone = "Europe/Amsterdam"
[assignments.a1]
due = 2026-10-01T23:59:00
[extensions.a1]
ada = "36 hours"
bob = 2026-10-05T12:00:00Z
"""))
    assert term.due["a1"] == dt.datetime(2026, 10, 1, 21, 59)  # CEST is UTC+2
    assert term.due_for("a1", "ada") == dt.datetime(2026, 10, 3, 9, 59)
    assert term.due_for("a1", "cy") == term.due["a1"]
    assert term.last_due("a1") == dt.datetime(2026, 10, 5, 12, 0)
    assert term.extension("a1", "bob") == dt.timedelta(days=3, hours=14, minutes=1)
    assert term.extension("a1", "cy") is None
    assert load_term(tmp_path / "none.toml").due == {}  # no file: no due dates, no penalty


@pytest.mark.parametrize("text, words", [
    ("[penalty]\nmethod = 'half'", "penalty.method is 'half'"),
    ("[penalty]\nmethod = 'per_day'", "percent_per_day > 0"),
    ("[deadlines]\nx = 1", "unknown section or key deadlines"),
    ("[extensions.a1]\nada = '3 days'", "needs the assignment's due date"),
    ("[assignments.a1]\ndue = 'next friday'", "is not a date"),
    ("[feedback]\ndefault = 'all'", "feedback.default is 'all'"),
    ("timezone = 'Mars/Olympus'", "is not a time zone"),
    ("[penalty\n", "not valid TOML"),
    ("penalty = 'zero'", "penalty must be a table"),
    ("excused = ['ada']", "excused must be a table"),
    ("[feedback]\ntests = 'x'", "feedback.tests must be a table"),
])
def test_a_term_file_with_a_mistake_says_what_and_where(tmp_path, text, words):
    with pytest.raises(TermError, match="term.toml") as info:
        load_term(_toml(tmp_path, text))
    assert words in str(info.value)


def test_moodle_roster_with_semicolons_ids_from_the_email_and_bad_rows_listed(tmp_path):
    path = tmp_path / "moodle.csv"
    path.write_text("First name;Surname;ID number;Email address\n"
                    "Ada;Lovelace;1001;ada@uni.example\n"
                    "Alan;Turing;1002;alan@uni.example\n"
                    "Alan;Turing;1003;alan@uni.example\n"
                    "No;Mail;1004;\n", encoding="utf-8")
    roster = read_roster(path)
    assert roster.lms == "moodle"
    assert [(s.id, s.lms_user_id, s.last_name) for s in roster.students] == [("ada", "1001", "Lovelace"),
                                                                            ("alan", "1002", "Turing")]
    assert len(roster.skipped) == 2 and "also on line 3" in roster.skipped[0] and "cannot be an nbgrader id" in \
        roster.skipped[1]


def test_a_roster_from_elsewhere_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_text("name,login\nAda,ada\n", encoding="utf-8")
    with pytest.raises(RosterError, match="neither Canvas's .* nor Moodle's"):
        read_roster(path)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "instructor.lms", "roster", "import", str(path), "--course",
                           str(tmp_path)], capture_output=True, text=True, cwd=root)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_canvas_roster_with_another_id_column(tmp_path):
    path = tmp_path / "canvas.csv"
    path.write_text("\ufeffStudent,ID,SIS User ID,SIS Login ID,Section\n    Points Possible,,,,\n"
                    '"Lovelace, Ada",11,S1,ada,A\n', encoding="utf-8")
    roster = read_roster(path, "SIS User ID")
    assert [(s.id, s.first_name, s.last_name, s.lms_user_id) for s in roster.students] == [("S1", "Ada", "Lovelace", "11")]
    assert roster.ignored and not roster.skipped
    with pytest.raises(RosterError, match="no column 'Login'"):
        read_roster(path, "Login")


def test_numbers_for_the_lms():
    assert [_number(v, "point") for v in (7.5, 8.0, 7.125, None)] == ["7.5", "8", "7.13", ""]
    assert _number(7.5, "comma") == "7,5"


@pytest.mark.parametrize("message, shown", [
    ("dL_dx is wrong: expected 0.54, got -0.54 (off by 1.08). Check the sign.",
     f"dL_dx is wrong: expected ({HIDDEN_NOTE}), got -0.54 (off by 1.08). Check the sign."),
    ("out has the wrong values at (0, 1) (expected [1. 2.], got [1. 3.]). Hint.",
     f"out has the wrong values at (0, 1) (expected ({HIDDEN_NOTE}), got [1. 3.]). Hint."),
    ("q is nan (expected 3). Look at the addition.", f"q is nan (expected ({HIDDEN_NOTE})). Look at the addition."),
])
def test_message_only_feedback_hides_expected_values(message, shown):
    assert hide_expected(message) == shown


def test_the_leak_check_finds_a_hidden_line_on_a_page(tmp_path):
    import nbformat

    test = nbformat.v4.new_code_cell("check(x)\n### BEGIN HIDDEN TESTS\nassert secret_value(x) == 42\n"
                                     "check(x)\n### END HIDDEN TESTS\n")
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "test_x", "points": 1}
    source, release = tmp_path / "source.ipynb", tmp_path / "release.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[test]), source)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("check(x)")]), release)
    page = tmp_path / "feedback" / "ada" / "a1" / "a1.html"
    page.parent.mkdir(parents=True)
    page.write_text("<pre><span>assert</span> <span>secret_value</span>(x) &#61;= 42</pre>", encoding="utf-8")
    assert leaks(tmp_path / "feedback", "a1", [source], [release]) == [f"{page}: assert secret_value(x) == 42"]
    page.write_text("<pre>check(x)</pre>", encoding="utf-8")
    assert leaks(tmp_path / "feedback", "a1", [source], [release]) == []


# -- the gradebook side: exports and hand grades, on a gradebook built by hand ---------------------------------
A1 = "a1"
NOW = dt.datetime(2026, 11, 20, 12, 0)  # naive UTC, as the gradebook keeps dates
DUE = dt.datetime(2026, 11, 10, 12, 0)


def _gradebook(tmp_path: Path):
    from nbgrader.api import Gradebook

    url = f"sqlite:///{tmp_path / 'autograder' / 'gradebook.db'}"
    (tmp_path / "autograder").mkdir(exist_ok=True)
    with Gradebook(url) as gb:
        gb.add_assignment(A1)
        gb.add_notebook(A1, A1)
        gb.add_grade_cell("test_x", A1, A1, max_score=4, cell_type="code")
        gb.add_solution_cell("x", A1, A1)
        for s in ("ontime", "late", "extended", "ungradable", "collected", "failed", "absent", "excused"):
            gb.add_student(s)
    return url


def _submit(url: str, student: str, when: dt.datetime, auto: float | None) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(url) as gb:
        gb.add_submission(A1, student, timestamp=when)
        grade = gb.find_grade("test_x", A1, A1, student)
        grade.auto_score, grade.needs_manual_grade = auto, auto is None
        gb.db.commit()


def _rows(url: str, root: Path, term_text: str):
    from nbgrader.api import Gradebook

    from instructor.lms import grade_rows

    term = load_term(_toml(root, term_text))
    with Gradebook(url) as gb:
        students = sorted(s.id for s in gb.students)
        return {r.student: r for r in grade_rows(gb, term, [A1], students, NOW, root)}


TERM = f"""
[penalty]
method = "per_day"
percent_per_day = 25
[assignments.{A1}]
due = {DUE.isoformat()}Z
[excused]
{A1} = ["excused"]
"""


def test_export_rows_never_send_a_graders_failure_as_zero_and_use_the_term_as_it_is_now(tmp_path):
    url = _gradebook(tmp_path)
    _submit(url, "ontime", DUE - dt.timedelta(hours=1), 4.0)
    _submit(url, "late", DUE + dt.timedelta(hours=30), 4.0)  # 2 started days: 50 %
    _submit(url, "extended", DUE + dt.timedelta(hours=30), 4.0)
    _submit(url, "ungradable", DUE + dt.timedelta(hours=5), None)  # waits for a hand grade
    (tmp_path / "autograder" / "submitted" / "collected" / A1).mkdir(parents=True)  # collected, never graded
    results = tmp_path / "autograder" / "reports" / A1 / "results"
    results.mkdir(parents=True)
    _submit(url, "failed", DUE - dt.timedelta(hours=1), 4.0)  # graded once; the latest run failed
    (results / "failed.json").write_text('{"status": "grader error", "reason": "the sandbox did not start"}')
    rows = _rows(url, tmp_path, TERM)
    assert (rows["ontime"].status, rows["ontime"].score) == ("graded", 4.0)
    assert (rows["late"].status, rows["late"].score, rows["late"].penalty) == ("late", 2.0, 2.0)
    assert (rows["extended"].status, rows["extended"].score) == ("late", 2.0)
    for s in ("ungradable", "collected", "failed"):
        assert (rows[s].status, rows[s].score) == ("needs grading", None), s
    assert (rows["absent"].status, rows["absent"].score) == ("missing", 0.0)
    assert (rows["excused"].status, rows["excused"].score) == ("excused", None)
    # An extension given after grading, and a hand grade of the ungradable late submission: both count now.
    from nbgrader.api import Gradebook

    with Gradebook(url) as gb:
        grade = gb.find_grade("test_x", A1, A1, "ungradable")
        grade.manual_score = 4.0
        gb.db.commit()
    rows = _rows(url, tmp_path, TERM + f'[extensions.{A1}]\nextended = "2 days"\n')
    assert (rows["extended"].status, rows["extended"].score, rows["extended"].penalty) == ("graded", 4.0, 0.0)
    assert (rows["ungradable"].status, rows["ungradable"].score) == ("late", 3.0)  # 1 started day: 25 %
    # Without a due date (in the term or the gradebook) a missing submission is left empty, not 0; before it, it is
    # not due yet.
    with Gradebook(url) as gb:
        gb.find_assignment(A1).duedate = None
        gb.db.commit()
    rows = _rows(url, tmp_path, "")
    assert (rows["absent"].status, rows["absent"].score) == ("missing", None)
    rows = _rows(url, tmp_path, f"[assignments.{A1}]\ndue = 2026-12-24T12:00:00Z\n")
    assert (rows["absent"].status, rows["absent"].score) == ("not due yet", None)


def test_hand_grades_follow_the_answers_not_the_runs(tmp_path):
    from nbgrader.api import Gradebook

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "autograder"))
    from grade import record
    from sandbox.session import CellResult, Result

    url = _gradebook(tmp_path)
    reports = tmp_path / "autograder" / "reports" / A1

    def run(answers: str, status: str = "graded") -> Result:
        r = Result("ontime", A1, A1, status, answers=answers)
        r.cells = [CellResult("test_x", 0.0, 4.0, False)]
        record(url, r, ["test_x"], reports)
        return r

    def hand() -> tuple:
        with Gradebook(url) as gb:
            return (gb.find_grade("test_x", A1, A1, "ontime").manual_score,
                    gb.find_comment("x", A1, A1, "ontime").manual_comment)

    run("first answers")
    with Gradebook(url) as gb:  # what the Formgrader writes
        gb.find_grade("test_x", A1, A1, "ontime").manual_score = 3.0
        gb.find_comment("x", A1, A1, "ontime").manual_comment = "nearly"
        gb.db.commit()
    assert not run("first answers").notes and hand() == (3.0, "nearly")  # a regrade of the same answers
    run("second answers", status="grader error")  # a failed run records nothing, not even the answers it read
    assert hand() == (3.0, "nearly")
    r = run("second answers")
    assert hand() == (None, None)
    assert any("dropped the manual score 3 of test_x" in n for n in r.notes)
    assert any("dropped the comment on x ('nearly')" in n for n in r.notes)
