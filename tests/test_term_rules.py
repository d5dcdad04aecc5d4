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
    assert term.seconds_late("a1", "cy", dt.datetime(2026, 10, 2, 21, 59, tzinfo=dt.timezone.utc)) == DAY
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
