"""Rosters from an LMS, and grades back to it: Canvas and Moodle, as CSV files each imports.

    bash course.sh roster import roster.csv            # Canvas's or Moodle's export; the LMS is read from the header
    bash course.sh export canvas 01_computational_graphs --out canvas.csv
    bash course.sh export moodle all --out moodle.csv [--decimal comma]
    nbgrader export --exporter instructor.lms.CanvasExport --to canvas.csv      # the same, as nbgrader plugins

A roster goes into nbgrader's gradebook (id, names, email, the LMS's user id) and, with every LMS column,
into ``autograder/roster.json`` (not committed: it holds personal data). The nbgrader id of a student is
the JupyterHub user name: Canvas's "SIS Login ID" and Moodle's "Username" (or the email address's local
part) unless ``--id-column`` names another column.

An export writes one row per roster student, in the LMS's own layout:

* Canvas (its gradebook import): ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per
  assignment named ``<name> (<Canvas assignment id>)`` (term.toml's ``canvas_name`` and ``canvas_id``;
  without an id Canvas makes a new assignment of the column), and a "Points Possible" row first.
  Excused: ``EX``.
* Moodle (its "Import grades from CSV"): ``First name, Surname, ID number, Email address``, then per
  assignment its grade and a feedback column; map "ID number" or "Email address" to the user in Moodle's
  import form. ``--decimal comma`` writes 7,5 with ``;`` between fields (Moodle's separator option).

Scores are the gradebook's (manual overrides included) less the late penalty. A missing submission is 0
once the student's due date (with the extension) has passed, empty before; one that could not be graded
or waits for manual grading is empty and listed: a grader's failure is never sent as a 0. Lateness, the
penalty and the status of every row, and the students with grades but not on the roster (whom the LMS
could not place), go into ``<out>.details.csv`` beside the export: nobody is dropped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Enum, Unicode

from instructor.term import ROOT, Term, TermError, lateness, load_term

ROSTER_FILE = Path("autograder") / "roster.json"
CANVAS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE = ("First name", "Surname", "ID number", "Email address")
_BAD_ID = re.compile(r"[/\\+*\s]")

__all__ = ["CanvasExport", "MoodleExport", "RosterError", "import_roster", "read_roster", "grade_rows"]


class RosterError(ValueError):
    """A roster file the course cannot read (the message says why and what to do)."""


@dataclass
class RosterStudent:
    id: str
    first_name: str
    last_name: str
    email: str
    lms_user_id: str
    lms: dict[str, str] = field(default_factory=dict)  # the row as the LMS wrote it


@dataclass
class Roster:
    lms: str
    students: list[RosterStudent]
    skipped: list[str]  # rows not imported because something is wrong with them, with the reason
    ignored: list[str] = field(default_factory=list)  # rows that are not students (Canvas's points row, test student)


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lstrip("\ufeff")).lower()


def read_roster(path: Path, id_column: str | None = None) -> Roster:
    """A Canvas or Moodle roster CSV (the LMS recognised from its header)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RosterError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # a spreadsheet's "CSV" in the Windows code page
        text = raw.decode("cp1252", errors="replace")
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not rows:
        raise RosterError(f"{path} is empty: export the roster from Canvas (Grades > Export) or Moodle "
                          "(Participants or Grades > Export > Plain text file)")
    header = [_norm(h) for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}

    def get(row: list[str], name: str) -> str:
        i = col.get(_norm(name))
        return row[i].strip() if i is not None and i < len(row) else ""

    if all(_norm(h) in col for h in ("Student", "ID", "SIS Login ID")):
        lms, default_id = "canvas", "SIS Login ID"
    elif _norm("First name") in col and (_norm("Surname") in col or _norm("Last name") in col) and \
            _norm("Email address") in col:
        lms, default_id = "moodle", "Username" if _norm("Username") in col else "Email address"
    else:
        raise RosterError(f"{path}: the header ({', '.join(rows[0][:8])}) is neither Canvas's (Student, ID, SIS User "
                          "ID, SIS Login ID, Section) nor Moodle's (First name, Surname, ID number, Email address): "
                          "export the roster from the LMS unchanged")
    id_column = id_column or default_id
    if _norm(id_column) not in col:
        raise RosterError(f"{path}: no column {id_column!r} for the students' nbgrader ids (columns: "
                          f"{', '.join(rows[0])}); name one with --id-column")
    students, skipped, ignored, seen = [], [], [], {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        record = {rows[0][i].strip().lstrip("\ufeff"): (row[i].strip() if i < len(row) else "")
                  for i in range(len(rows[0]))}
        if lms == "canvas":
            name = get(row, "Student")
            if name.strip().lower() in ("points possible", "student, test", "test student") or not get(row, "ID"):
                ignored.append(f"line {n}: {name.strip() or '(no name)'}: not a student (Canvas's "
                               f"{'points row' if 'points' in name.lower() else 'test student or a row without ID'})")
                continue
            last, _, first_name = name.partition(",")
            first_name, last = (first_name.strip(), last.strip()) if _ else (name, "")
            email, lms_id = get(row, "Email") or "", get(row, "ID")
        else:
            first_name, last = get(row, "First name"), get(row, "Surname") or get(row, "Last name")
            email, lms_id = get(row, "Email address"), get(row, "ID number")
        sid = get(row, id_column)
        if _norm(id_column) == _norm("Email address"):
            sid = sid.partition("@")[0]
        if not sid or _BAD_ID.search(sid) or sid.startswith("."):
            skipped.append(f"line {n}: {first_name} {last}: the {id_column} {sid!r} cannot be an nbgrader id "
                           "(empty, or with a space, /, \\, + or *); fix it in the LMS or use --id-column")
            continue
        if sid in seen:
            skipped.append(f"line {n}: {first_name} {last}: the id {sid!r} is also on line {seen[sid]}")
            continue
        seen[sid] = n
        students.append(RosterStudent(sid, first_name, last, email, lms_id, record))
    return Roster(lms, students, skipped, ignored)


def roster_path(root: Path) -> Path:
    return root / ROSTER_FILE


def load_roster(root: Path) -> dict | None:
    path = roster_path(root)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def import_roster(root: Path, csv_path: Path, id_column: str | None = None) -> tuple[Roster, list[str]]:
    """Import a roster into the gradebook and roster.json; returns it and lines for the instructor."""
    roster = read_roster(csv_path, id_column)
    db = root / "autograder" / "gradebook.db"
    if not db.is_file():
        raise RosterError(f"no gradebook at {db}: run `bash course.sh release` first")
    with Gradebook(f"sqlite:///{db}") as gb:
        before = {s.id for s in gb.students}
        for s in roster.students:
            gb.update_or_create_student(s.id, first_name=s.first_name, last_name=s.last_name, email=s.email or None,
                                        lms_user_id=s.lms_user_id or None)
    data = {"lms": roster.lms, "source": str(csv_path), "imported": dt.datetime.now(dt.timezone.utc).isoformat(),
            "students": [asdict(s) for s in roster.students]}
    path = roster_path(root)
    path.with_suffix(".tmp").write_text(json.dumps(data, indent=1), encoding="utf-8")
    path.with_suffix(".tmp").replace(path)
    ids = {s.id for s in roster.students}
    submitted = root / "autograder" / "submitted"
    folders = {p.name for p in submitted.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if submitted.is_dir() else set()
    lines = [f"imported {len(roster.students)} students from a {roster.lms.capitalize()} roster ({csv_path}): "
             f"{len(ids - before)} new, {len(ids & before)} updated"]
    lines += [f"not imported: {s}" for s in roster.skipped]
    lines += [f"ignored: {s}" for s in roster.ignored]
    if extra := sorted(before - ids):
        lines.append(f"in the gradebook but not on this roster (kept, not exported to the LMS): {', '.join(extra)}")
    if extra := sorted(folders - ids):
        lines.append(f"submissions from students not on the roster (graded, not exported to the LMS): "
                     f"{', '.join(extra)}")
    if folders and (extra := sorted(ids - folders)):
        lines.append(f"on the roster without a submission folder yet: {', '.join(extra)}")
    return roster, lines


# -- grades -----------------------------------------------------------------------------------------------
@dataclass
class GradeRow:
    student: str
    assignment: str
    status: str  # graded | late | missing | excused | needs grading | not due yet
    score: float | None  # what the LMS gets (None: leave the cell empty)
    raw: float | None = None
    penalty: float = 0.0
    max_score: float = 0.0
    seconds_late: float = 0.0
    timestamp: str = ""
    on_roster: bool = True
    detail: str = ""


def _latest_status(root: Path, assignment: str, student: str) -> tuple[str, str]:
    """(status, reason) of the student's latest run of `bash course.sh grade`, or ('', '') when there is none."""
    from urllib.parse import quote

    path = root / "autograder" / "reports" / assignment / "results" / f"{quote(student, safe='')}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data.get("status", "")), str(data.get("reason", ""))
    except (OSError, ValueError, AttributeError):
        return "", ""


def grade_rows(gb, term: Term, assignments: list[str], students: list[str], now: dt.datetime,
               root: Path) -> list[GradeRow]:
    """One row per student and assignment: what the LMS gets, and why. The late penalty is worked out anew from
    the gradebook's scores (hand grades included) and the term as it is now (an extension given after grading
    counts); a submission that was collected but not graded, or whose latest grading failed, is never a 0."""
    from instructor.term import assign_late_penalty

    rows = []
    for a in assignments:
        arow = gb.find_assignment(a)
        max_score = float(arow.max_score)
        for s in students:
            row = GradeRow(s, a, "graded", None, max_score=max_score)
            try:
                sub = gb.find_submission(a, s)
            except MissingEntry:
                sub = None
            status, reason = _latest_status(root, a, s)
            if term.is_excused(a, s):
                row.status, row.detail = "excused", "excused (term.toml)"
            elif status == "grader error":
                row.status, row.detail = "needs grading", f"the latest grading failed ({reason[:200]}): grade again"
            elif sub is None and (root / "autograder" / "submitted" / s / a).is_dir():
                row.status, row.detail = "needs grading", "submitted, not graded yet: bash course.sh grade " + a
            elif sub is None:
                due = term.due_for(a, s) or arow.duedate
                if due is None:
                    row.status, row.detail = "missing", "no submission (no due date in term.toml: left empty)"
                elif now >= due:
                    row.status, row.score, row.detail = "missing", 0.0, "no submission"
                else:
                    row.status, row.detail = "not due yet", f"no submission; due {due:%Y-%m-%d %H:%M} UTC"
            else:
                grades = [g for nb in sub.notebooks for g in nb.grades]
                row.timestamp = sub.timestamp.isoformat() if sub.timestamp else ""
                if any(g.score is None or (g.needs_manual_grade and g.manual_score is None) for g in grades):
                    row.status, row.detail = "needs grading", "not graded automatically: grade it in the Formgrader"
                else:
                    row.seconds_late, row.penalty = assign_late_penalty(gb, term, a, s)
                    row.raw = float(sub.score)
                    row.score = max(0.0, row.raw - row.penalty)
                    if row.seconds_late > 0:
                        row.status = "late"
                        row.detail = (f"late {lateness(row.seconds_late)}: -{row.penalty:g} points ({term.penalty.describe()})"
                                      if row.penalty else f"late {lateness(row.seconds_late)}: no penalty")
            rows.append(row)
    return rows


def _number(value: float | None, decimal: str) -> str:
    if value is None:
        return ""
    from decimal import ROUND_HALF_UP, Decimal

    text = str(Decimal(repr(float(value))).quantize(Decimal("0.01"), ROUND_HALF_UP))
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return text.replace(".", ",") if decimal == "comma" else text


class _LmsExport(ExportPlugin):
    lms = ""
    course_root = Unicode("", help="the course root (default: the folder above the gradebook's)").tag(config=True)
    decimal = Enum(["point", "comma"], "point", help="decimal separator (comma: fields separated by ';')").tag(config=True)

    def _root(self, gradebook) -> Path:
        if self.course_root:
            return Path(self.course_root)
        db = gradebook.db_url.removeprefix("sqlite:///")
        return Path(db).resolve().parent.parent

    def export(self, gradebook) -> None:
        root = self._root(gradebook)
        try:
            term = load_term(root=root)
        except TermError as exc:
            raise SystemExit(f"course.sh export: {exc}") from None
        roster = load_roster(root)
        if roster is None:
            raise SystemExit(f"course.sh export: no roster at {roster_path(root)}: import the LMS's roster first "
                             "(bash course.sh roster import FILE)")
        if roster["lms"] != self.lms:
            self.log.warning("the roster came from %s; exporting for %s", roster["lms"], self.lms)
        known = [a.name for a in gradebook.assignments]
        wanted = [str(a) for a in self.assignment] or known
        if unknown := [a for a in wanted if a not in known]:
            raise SystemExit(f"course.sh export: {', '.join(unknown)} not in the gradebook ({', '.join(known)})")
        people = {s["id"]: s for s in roster["students"]}
        others = sorted({s.id for s in gradebook.students} - set(people))
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = grade_rows(gradebook, term, wanted, list(people) + others, now, root)
        for r in rows:
            r.on_roster = r.student in people
        dest = Path(self.to or f"{self.lms}.csv")
        if not dest.parent.is_dir():
            raise SystemExit(f"course.sh export: no folder {dest.parent} for {dest.name}: create it or choose another --out")
        details = dest.with_name(dest.stem + ".details.csv")
        try:
            self.write(dest, term, wanted, people, [r for r in rows if r.on_roster], gradebook)
            write_details(details, rows, people)
        except OSError as exc:
            raise SystemExit(f"course.sh export: cannot write {exc.filename or dest}: {exc.strerror or exc}") from None
        self.summary = summarise(self.lms, dest, details, rows)
        if typos := sorted(term.students_named() - set(people) - set(others)):
            self.summary.append(f"term.toml names students neither the roster nor the gradebook knows (a typo? their "
                                f"extension or excuse applies to no one): {', '.join(typos)}")
        for line in self.summary:
            self.log.info(line)

    def title(self, term: Term, a: str) -> str:
        spec = term.lms.get(a, {})
        name = str(spec.get(f"{self.lms}_name") or a)
        if self.lms == "canvas" and spec.get("canvas_id"):
            return f"{name} ({spec['canvas_id']})"
        return name


def _writer(f, decimal: str):
    return csv.writer(f, delimiter=";" if decimal == "comma" else ",", lineterminator="\r\n")


class CanvasExport(_LmsExport):
    """Canvas's gradebook import CSV (see the module's docstring)."""

    lms = "canvas"

    def write(self, dest, term, assignments, people, rows, gradebook) -> None:
        by = {(r.student, r.assignment): r for r in rows}
        with open(dest, "w", newline="", encoding="utf-8") as f:
            w = _writer(f, self.decimal)
            w.writerow([*CANVAS, *(self.title(term, a) for a in assignments)])
            w.writerow(["    Points Possible", "", "", "", "",
                        *(_number(float(gradebook.find_assignment(a).max_score), self.decimal) for a in assignments)])
            for sid, s in people.items():
                lms = s["lms"]
                cells = []
                for a in assignments:
                    r = by[(sid, a)]
                    cells.append("EX" if r.status == "excused" else _number(r.score, self.decimal))
                w.writerow([lms.get("Student") or f"{s['last_name']}, {s['first_name']}", lms.get("ID", ""),
                            lms.get("SIS User ID", ""), lms.get("SIS Login ID", ""), lms.get("Section", ""), *cells])


class MoodleExport(_LmsExport):
    """Moodle's grade import CSV (see the module's docstring)."""

    lms = "moodle"

    def write(self, dest, term, assignments, people, rows, gradebook) -> None:
        by = {(r.student, r.assignment): r for r in rows}
        with open(dest, "w", newline="", encoding="utf-8") as f:
            w = _writer(f, self.decimal)
            head = list(MOODLE)
            for a in assignments:
                head += [self.title(term, a), f"{self.title(term, a)} (feedback)"]
            w.writerow(head)
            for sid, s in people.items():
                cells = []
                for a in assignments:
                    r = by[(sid, a)]
                    cells += [_number(r.score, self.decimal), r.detail]
                w.writerow([s["first_name"], s["last_name"], s["lms"].get("ID number", s["lms_user_id"]),
                            s["email"], *cells])


def write_details(path: Path, rows: list[GradeRow], people: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["assignment", "student", "lms_user_id", "on_roster", "status", "exported", "raw_score",
                    "late_penalty", "max_score", "seconds_late", "timestamp", "detail"])
        for r in sorted(rows, key=lambda r: (r.assignment, not r.on_roster, r.student)):
            w.writerow([r.assignment, r.student, people.get(r.student, {}).get("lms_user_id", ""),
                        "yes" if r.on_roster else "no", r.status, "" if r.score is None else r.score,
                        "" if r.raw is None else r.raw, r.penalty, r.max_score, round(r.seconds_late),
                        r.timestamp, r.detail])


def summarise(lms: str, dest: Path, details: Path, rows: list[GradeRow]) -> list[str]:
    on = [r for r in rows if r.on_roster]
    count = {k: sum(1 for r in on if r.status == k) for k in
             ("graded", "late", "missing", "excused", "needs grading", "not due yet")}
    lines = [f"wrote {dest} for {lms.capitalize()}: {len({r.student for r in on})} roster students, "
             + ", ".join(f"{n} {k}" for k, n in count.items() if n) + f"; lateness and penalties in {details}"]
    if waiting := sorted({f"{r.student} ({r.assignment})" for r in on if r.status == "needs grading"}):
        lines.append(f"left empty, to grade by hand first: {', '.join(waiting)}")
    if off := sorted({r.student for r in rows if not r.on_roster}):
        lines.append(f"not on the roster, so not in {dest.name} (their grades are in {details.name}): {', '.join(off)}")
    return lines


# -- command line ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ro = sub.add_parser("roster", help="import a roster: bash course.sh roster import FILE")
    ro.add_argument("action", choices=["import"])
    ro.add_argument("file", type=Path)
    ro.add_argument("--id-column", help="the roster column that holds nbgrader ids (JupyterHub user names)")
    ro.add_argument("--course", type=Path, default=ROOT)
    ex = sub.add_parser("export", help="grades for an LMS: bash course.sh export canvas|moodle A|all --out FILE")
    ex.add_argument("lms", choices=["canvas", "moodle"])
    ex.add_argument("assignment", help="an assignment id or 'all'")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--decimal", choices=["point", "comma"], default="point",
                    help="decimal separator; comma also separates fields with ';' (Moodle's semicolon option)")
    ex.add_argument("--course", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    root = args.course.resolve()
    if args.command == "roster":
        try:
            roster, lines = import_roster(root, args.file, args.id_column)
        except RosterError as exc:
            print(f"course.sh roster: {exc}", file=sys.stderr)
            return 2
        for line in lines:
            print(line)
        return 1 if roster.skipped else 0
    db = root / "autograder" / "gradebook.db"
    if not db.is_file():
        print(f"course.sh export: no gradebook at {db}: run `bash course.sh release` first", file=sys.stderr)
        return 2
    plugin = (CanvasExport if args.lms == "canvas" else MoodleExport)(
        to=str(args.out), course_root=str(root), decimal=args.decimal,
        assignment=[] if args.assignment == "all" else [args.assignment])
    try:
        with Gradebook(f"sqlite:///{db}") as gb:
            plugin.export(gb)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    for line in plugin.summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
