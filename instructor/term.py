"""An instructor's term: due dates, extensions, excused students, the late penalty and what feedback shows.

All of it is one file the instructor writes, ``autograder/term.toml`` (``autograder/term.example.toml``
explains every key). Both graders read it: ``bash course.sh grade`` through :func:`assign_late_penalty`,
plain ``nbgrader autograde`` through :class:`TermLatePenalties`, the course configuration's replacement
for nbgrader's ``AssignLatePenalties`` (same plugin mechanism: ``LateSubmissionPlugin``). Each copies the
due date and the student's extension into the gradebook before it computes the penalty, so the
Formgrader, ``nbgrader export`` and the feedback show the same lateness.

Lateness is measured from the submission's ``timestamp.txt``: the exchange's record of when the student
submitted (``nbgrader submit`` writes it, ``nbgrader collect`` copies it with the folder), never the
notebook file's own dates.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nbgrader.plugins import LateSubmissionPlugin
from nbgrader.preprocessors import AssignLatePenalties
from traitlets import Unicode

ROOT = Path(__file__).resolve().parent.parent
TERM_FILE = Path("autograder") / "term.toml"
VISIBILITY = ("message", "message+expected", "nothing")
METHODS = ("none", "per_day", "zero")
_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(minute|hour|day|week)s?\s*$", re.I)

__all__ = ["Penalty", "Term", "TermError", "LatePenalty", "TermLatePenalties", "assign_late_penalty",
           "lateness", "load_term", "term_path"]


class TermError(ValueError):
    """term.toml says something the course cannot use (the message says what and where)."""


def term_path(root: Path = ROOT) -> Path:
    return root / TERM_FILE


@dataclass
class Penalty:
    """How many points a late submission loses.

    ``none``: nothing; ``per_day``: ``percent_per_day`` of the score for every started day late, at most
    ``cap_percent``; ``zero``: the whole score once late at all. ``zero_after_days`` (with any method):
    the whole score once more than that many days late.
    """

    method: str = "none"
    percent_per_day: float = 0.0
    cap_percent: float = 100.0
    zero_after_days: float | None = None

    def points(self, score: float, seconds_late: float) -> float:
        if seconds_late <= 0 or score <= 0:
            return 0.0
        if self.method == "zero" or (self.zero_after_days is not None and seconds_late > self.zero_after_days * 86400):
            return float(score)
        if self.method == "per_day":
            days = math.ceil(seconds_late / 86400)
            return float(score) * min(self.cap_percent, days * self.percent_per_day) / 100.0
        return 0.0

    def describe(self) -> str:
        if self.method == "zero":
            text = "a late submission scores 0"
        elif self.method == "per_day":
            text = f"{self.percent_per_day:g}% of the score per started day late, at most {self.cap_percent:g}%"
        else:
            text = "no penalty for lateness"
        if self.zero_after_days is not None and self.method != "zero":
            text += f"; 0 when more than {self.zero_after_days:g} days late"
        return text


@dataclass
class Term:
    path: Path | None = None
    zone: dt.tzinfo = dt.timezone.utc
    due: dict[str, dt.datetime] = field(default_factory=dict)  # naive UTC, as nbgrader's gradebook keeps dates
    extensions: dict[str, dict[str, dt.datetime]] = field(default_factory=dict)  # assignment -> student -> due
    excused: dict[str, set[str]] = field(default_factory=dict)
    penalty: Penalty = field(default_factory=Penalty)
    feedback_default: str = "message"
    feedback_tests: dict[str, str] = field(default_factory=dict)
    lms: dict[str, dict[str, object]] = field(default_factory=dict)  # assignment -> canvas_name, canvas_id, ...

    def due_for(self, assignment: str, student: str) -> dt.datetime | None:
        """The student's due date for ``assignment`` (naive UTC; with the extension), or None."""
        return self.extensions.get(assignment, {}).get(student) or self.due.get(assignment)

    def extension(self, assignment: str, student: str, due: dt.datetime | None = None) -> dt.timedelta | None:
        """The student's extension, from the term's due date or, when the term has none, ``due`` (the
        gradebook's, set with ``nbgrader db assignment add --duedate``)."""
        own, due = self.extensions.get(assignment, {}).get(student), self.due.get(assignment) or due
        return own - due if own is not None and due is not None else None

    def students_named(self) -> set[str]:
        """Every student id the term names (extensions, excused): to catch a typo that would miss the student."""
        return {s for a in self.extensions.values() for s in a} | {s for a in self.excused.values() for s in a}

    def last_due(self, assignment: str) -> dt.datetime | None:
        """The due date plus the longest extension: when every student's time is up (naive UTC)."""
        due = self.due.get(assignment)
        if due is None:
            return None
        return max([due, *self.extensions.get(assignment, {}).values()])

    def visibility(self, grade_id: str) -> str:
        return self.feedback_tests.get(grade_id, self.feedback_default)

    def is_excused(self, assignment: str, student: str) -> bool:
        return student in self.excused.get(assignment, set())


def lateness(seconds: float) -> str:
    """How late, in words the reports and exports share: '1 d 12 h', or '5 h 3 min' under a day."""
    days, rest = divmod(int(round(seconds)), 86400)
    return f"{days} d {rest // 3600} h" if days else f"{rest // 3600} h {rest % 3600 // 60} min"


def _utc(when: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A naive UTC datetime; a naive input is read in ``zone``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _date(value, where: str, zone: dt.tzinfo) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _utc(value, zone)
    if isinstance(value, dt.date):
        return _utc(dt.datetime.combine(value, dt.time(23, 59, 59)), zone)
    if isinstance(value, str):
        try:
            return _utc(dt.datetime.fromisoformat(value.strip()), zone)
        except ValueError:
            pass
    raise TermError(f"{where}: {value!r} is not a date (write e.g. 2026-10-01T23:59:00+02:00)")


def _extension(value, due: dt.datetime | None, where: str, zone: dt.tzinfo) -> dt.datetime:
    if isinstance(value, str) and (m := _LENGTH.match(value)):
        if due is None:
            raise TermError(f"{where}: an extension of {value!r} needs the assignment's due date "
                            "([assignments.<id>] due = ...)")
        amount, unit = float(m.group(1)), m.group(2).lower()
        return due + dt.timedelta(**{unit + "s": amount})
    return _date(value, where, zone)


def load_term(path: Path | None = None, root: Path = ROOT) -> Term:
    """The term as ``path`` (default ``autograder/term.toml``) says; an empty term when there is no file."""
    path = Path(path) if path else term_path(root)
    if not path.is_file():
        return Term()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TermError(f"{path}: not valid TOML ({exc})") from None
    known = {"timezone", "penalty", "feedback", "assignments", "extensions", "excused"}
    if unknown := sorted(set(data) - known):
        raise TermError(f"{path}: unknown section or key {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for key in ("penalty", "feedback", "assignments", "extensions", "excused"):
        if not isinstance(data.get(key, {}), dict):
            raise TermError(f"{path}: {key} must be a table ([{key}] and keys under it; see term.example.toml)")
    if not isinstance(data.get("feedback", {}).get("tests", {}), dict):
        raise TermError(f"{path}: feedback.tests must be a table ([feedback.tests] with test_id = \"message\")")
    term = Term(path=path)
    if "timezone" in data:
        try:
            term.zone = ZoneInfo(str(data["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise TermError(f"{path}: timezone {data['timezone']!r} is not a time zone (e.g. Europe/Amsterdam)") from None
    for a, spec in dict(data.get("assignments", {})).items():
        if not isinstance(spec, dict):
            raise TermError(f"{path}: [assignments.{a}] must be a table")
        if "due" in spec:
            term.due[a] = _date(spec["due"], f"{path}: assignments.{a}.due", term.zone)
        term.lms[a] = {k: v for k, v in spec.items() if k != "due"}
    for a, students in dict(data.get("extensions", {})).items():
        if not isinstance(students, dict):
            raise TermError(f"{path}: [extensions.{a}] must map student ids to a date or a length ('3 days')")
        term.extensions[a] = {str(s): _extension(v, term.due.get(a), f"{path}: extensions.{a}.{s}", term.zone)
                              for s, v in students.items()}
    for a, students in dict(data.get("excused", {})).items():
        if not isinstance(students, list):
            raise TermError(f"{path}: excused.{a} must be a list of student ids")
        term.excused[a] = {str(s) for s in students}
    p = dict(data.get("penalty", {}))
    method = str(p.get("method", "none"))
    if method not in METHODS:
        raise TermError(f"{path}: penalty.method is {method!r}; use one of {', '.join(METHODS)}")
    try:
        term.penalty = Penalty(method, float(p.get("percent_per_day", 0)), float(p.get("cap_percent", 100)),
                               None if p.get("zero_after_days") is None else float(p["zero_after_days"]))
    except (TypeError, ValueError):
        raise TermError(f"{path}: [penalty] values must be numbers") from None
    if method == "per_day" and term.penalty.percent_per_day <= 0:
        raise TermError(f"{path}: penalty.method 'per_day' needs percent_per_day > 0")
    f = dict(data.get("feedback", {}))
    term.feedback_default = str(f.get("default", "message"))
    term.feedback_tests = {str(k): str(v) for k, v in dict(f.get("tests", {})).items()}
    for key, mode in [("feedback.default", term.feedback_default),
                      *((f"feedback.tests.{k}", v) for k, v in term.feedback_tests.items())]:
        if mode not in VISIBILITY:
            raise TermError(f"{path}: {key} is {mode!r}; use one of {', '.join(VISIBILITY)}")
    return term


# -- the gradebook ---------------------------------------------------------------------------------------
def sync_submission(gb, term: Term, assignment: str, student: str) -> None:
    """Copy the term's due date of ``assignment`` and the student's extension into nbgrader's gradebook."""
    row = gb.find_assignment(assignment)
    if assignment in term.due:
        row.duedate = term.due[assignment]
    sub = gb.find_submission(assignment, student)
    sub.extension = term.extension(assignment, student, row.duedate)
    gb.db.commit()


def assign_late_penalty(gb, term: Term, assignment: str, student: str, notebook: str | None = None
                        ) -> tuple[float, float]:
    """Write the late penalty of a submitted notebook (all of the submission's when ``notebook`` is None) into the
    gradebook, as nbgrader's AssignLatePenalties does: from the current score (hand grades included) and the
    term as it is now; at most the notebook's score. Returns (seconds late, penalty)."""
    sync_submission(gb, term, assignment, student)
    sub = gb.find_submission(assignment, student)
    late, total = float(sub.total_seconds_late or 0.0), 0.0
    for nb in sub.notebooks:
        if notebook is not None and nb.name != notebook:
            continue
        score = float(nb.score or 0.0)
        penalty = min(max(term.penalty.points(score, late), 0.0), score) if late > 0 else 0.0
        nb.late_submission_penalty = penalty if late > 0 else None
        total += penalty
    gb.db.commit()
    return late, total


class LatePenalty(LateSubmissionPlugin):
    """nbgrader's late-submission plugin with the course's policy (``[penalty]`` of term.toml)."""

    term_file = Unicode("", help="the course's term.toml").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float):
        return load_term(Path(self.term_file) if self.term_file else None).penalty.points(score, total_seconds_late)


class TermLatePenalties(AssignLatePenalties):
    """nbgrader's AssignLatePenalties, after copying term.toml's due date and extension into the gradebook."""

    term_file = Unicode("", help="the course's term.toml").tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        term = load_term(Path(self.term_file) if self.term_file else None)
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            sync_submission(gb, term, info["assignment"], info["student"])
        return super().preprocess(nb, resources)

    def init_plugin(self) -> None:
        super().init_plugin()
        if isinstance(self.plugin_inst, LatePenalty) and not self.plugin_inst.term_file:
            self.plugin_inst.term_file = self.term_file
