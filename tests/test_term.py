"""An instructor's whole term, scripted (issue 20), on a synthetic class of 30 students.

A scratch copy of the course, with notebook 01 only, goes through: a Canvas roster import; a term.toml
with a due date, extensions, a late penalty, an excused student and per-test feedback visibility; a real
release into nbgrader's exchange; submissions through nbgrader's own exchange code, at simulated times (the
clock is the only thing faked: the times are what the exchange records); ``nbgrader collect``; grading;
a manual override and a regrade; feedback release; Canvas and Moodle exports; the similarity report.
Each output is read back and checked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
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

from synthetic_class import make_class  # noqa: E402

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not available here "
                                "(apt install bubblewrap): the grading command refuses to run without it")

A = "01_computational_graphs"
NAME = f"{A}.ipynb"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DUE = NOW - dt.timedelta(days=12)
DAY = dt.timedelta(days=1)
CANVAS_ID = 987654


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("GOINGDEEPER_EXCHANGE", None)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=1800)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _term_toml(last_extension: str) -> str:
    return f"""
timezone = "Europe/Amsterdam"
[penalty]
method = "per_day"
percent_per_day = 10
cap_percent = 50
zero_after_days = 7
[feedback]
default = "message"
[feedback.tests]
test_sin_graph = "message+expected"
test_lecture_forward = "nothing"
[assignments.{A}]
due = {DUE.isoformat()}
canvas_name = "Computational graphs"
canvas_id = {CANVAS_ID}
moodle_name = "Graphs"
[extensions.{A}]
ext_three = "3 days"
ext_late = {last_extension}
[excused]
{A} = ["excused"]
"""


def _submit(exchange: Path, student: str, folder: Path, when: dt.datetime) -> None:
    """``nbgrader submit`` as the student, in this process, with the exchange's clock set to ``when``."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeSubmit
    from traitlets.config import Config

    cfg = Config()
    cfg.CourseDirectory.course_id = "going-deeper"
    cfg.CourseDirectory.assignment_id = A
    cfg.CourseDirectory.student_id = student
    cfg.Exchange.root = str(exchange)
    cfg.Exchange.assignment_dir = str(folder)
    coursedir = CourseDirectory(config=cfg)
    submit = ExchangeSubmit(coursedir=coursedir, authenticator=Authenticator(config=cfg), config=cfg)
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    submit.set_timestamp = lambda: setattr(submit, "timestamp", stamp)
    submit.start()


def _canvas_roster(path: Path, students: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig") as f:  # Canvas writes a byte-order mark
        w = csv.writer(f)
        w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"Computational graphs ({CANVAS_ID})"])
        w.writerow(["    Points Possible", "", "", "", "", "10"])
        for i, s in enumerate(students):
            w.writerow([f"Student{i:02d}, {s.capitalize()}", str(5000 + i), f"SIS{i:04d}", s, "Section A", ""])
        w.writerow(["Student, Test", "4999", "", "", "Section A", ""])


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    course = ScratchCourse(tmp_path_factory.mktemp("term") / "a term course", course_config=True)
    course.add_source(A)
    course.generate(A)
    root = course.root
    exchange = root / "autograder" / "exchange"
    exchange.mkdir(mode=0o777)
    os.chmod(exchange, 0o777)
    synthetic = make_class(A, honest=25, planted=4, seed=20)
    notebooks = dict(synthetic["notebooks"])
    ids = sorted(notebooks)
    assert len(ids) == 29
    # Who does what. Two students submit but are not on the roster; two are on the roster and never submit
    # (one of them excused); one hands in a file that is not a notebook.
    late = {ids[0]: 1.5 * DAY, ids[1]: 4 * DAY, ids[2]: 9 * DAY}  # 20 %, 40 %, zero (after 7 days)
    notebooks["ext_three"] = notebooks.pop(ids[3])  # 3 days' extension, submits 2 days after the due date
    notebooks["ext_late"] = notebooks.pop(ids[4])  # extension to due + 5 days, submits 1 day after it: 10 %
    notebooks["offroster1"] = notebooks.pop(ids[5])
    notebooks["offroster2"] = notebooks.pop(ids[6])
    renamed = {ids[3]: "ext_three", ids[4]: "ext_late", ids[5]: "offroster1", ids[6]: "offroster2"}
    planted = [(renamed.get(a, a), renamed.get(b, b)) for a, b in synthetic["planted"]]
    roster = sorted(set(notebooks) - {"offroster1", "offroster2"}) + ["excused", "absent", "broken"]
    (root / "autograder" / "term.toml").write_text(_term_toml((DUE + 5 * DAY).isoformat()), encoding="utf-8")
    _canvas_roster(root / "canvas-roster.csv", roster)
    imported = _run("-m", "instructor.lms", "roster", "import", str(root / "canvas-roster.csv"), "--course", str(root))
    course.nbgrader("release_assignment", A)
    # Submissions through nbgrader's exchange, at simulated times.
    when = {s: DUE - DAY for s in notebooks}
    when.update({ids[0]: DUE + late[ids[0]], ids[1]: DUE + late[ids[1]], ids[2]: DUE + late[ids[2]],
                 "ext_three": DUE + 2 * DAY, "ext_late": DUE + 6 * DAY})
    work = root / "students"
    for student, nb in sorted(notebooks.items()):
        folder = work / student / A
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NAME)
        _submit(exchange, student, work / student, when[student])
    (work / "broken" / A).mkdir(parents=True)
    (work / "broken" / A / NAME).write_text('{"cells": "not a notebook', encoding="utf-8")
    _submit(exchange, "broken", work / "broken", DUE - DAY)
    course.nbgrader("collect", A)
    graded = _run(str(ROOT / "autograder" / "grade.py"), A, "--course", str(root), "--workers", "2", "--quiet",
                  check=False)
    return {"course": course, "root": root, "ids": ids, "late": late, "planted": planted, "roster": roster,
            "imported": imported, "graded": graded, "notebooks": notebooks, "exchange": exchange,
            "submitters": sorted(notebooks) + ["broken"]}


def _gradebook(term):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{term['root'] / 'autograder' / 'gradebook.db'}")


def _report_rows(term) -> dict[str, dict]:
    with open(term["root"] / "autograder" / "reports" / A / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_roster_import_maps_every_student_and_lists_the_rest(term):
    out = term["imported"].stdout
    assert "from a Canvas roster" in out and "30 new" in out, out
    assert "Points Possible" in out and "Student, Test" in out  # ignored, and said so
    with _gradebook(term) as gb:
        students = {s.id: s for s in gb.students}
        for i, s in enumerate(term["roster"]):
            assert students[s].lms_user_id == str(5000 + i), s
            assert students[s].first_name == s.capitalize() and students[s].last_name == f"Student{i:02d}"
    roster = json.loads((term["root"] / "autograder" / "roster.json").read_text())
    assert roster["lms"] == "canvas" and len(roster["students"]) == 30
    assert roster["students"][0]["lms"]["SIS User ID"] == "SIS0000"


def test_the_whole_class_is_graded_and_nobody_is_dropped(term):
    assert term["graded"].returncode == 0, term["graded"].stdout + term["graded"].stderr
    rows = _report_rows(term)
    assert set(term["submitters"]) <= set(rows), sorted(set(term["submitters"]) - set(rows))
    assert rows["broken"]["status"] == "ungradable"
    for s in ("absent", "excused"):
        assert rows[s]["status"] == "missing", rows[s]
    graded = [r for s, r in rows.items() if s in term["notebooks"]]
    assert len(graded) == 29 and all(r["status"] == "graded" for r in graded)


def test_lateness_comes_from_the_exchange_and_both_graders_apply_the_same_penalty(term):
    ids, late = term["ids"], term["late"]
    expected = {ids[0]: 0.2, ids[1]: 0.4, ids[2]: 1.0, "ext_three": 0.0, "ext_late": 0.1}
    with _gradebook(term) as gb:
        for s, fraction in expected.items():
            sub = gb.find_submission(A, s)
            assert sub.late_submission_penalty == pytest.approx(fraction * sub.score), (s, sub.score)
        assert gb.find_submission(A, ids[1]).total_seconds_late == pytest.approx(late[ids[1]].total_seconds(), abs=1)
        assert gb.find_submission(A, "ext_three").total_seconds_late == 0
        assert gb.find_submission(A, "ext_late").total_seconds_late == pytest.approx(86400, abs=1)
        on_time = gb.find_submission(A, ids[7])
        assert on_time.total_seconds_late == 0 and on_time.late_submission_penalty == 0
        before = (gb.find_submission(A, ids[1]).score, gb.find_submission(A, ids[1]).late_submission_penalty)
    rows = _report_rows(term)
    assert rows[ids[1]]["late"].startswith("4 d 0 h late: -") and float(rows[ids[1]]["late_penalty"]) == before[1]
    assert float(rows[ids[1]]["final_score"]) == pytest.approx(before[0] - before[1])
    report = (term["root"] / "autograder" / "reports" / A / "report.html").read_text()
    assert "4 d 0 h late" in report and "before the late penalty" in report
    # Plain nbgrader, with the course's configuration: the same penalty for the same submission.
    term["course"].nbgrader("autograde", A, "--student", ids[1], "--force")
    with _gradebook(term) as gb:
        sub = gb.find_submission(A, ids[1])
        assert (sub.score, sub.late_submission_penalty) == pytest.approx(before)


def test_a_manual_override_survives_a_regrade_unless_the_answer_changed(term):
    root, ids = term["root"], term["ids"]
    keep, change = ids[8], ids[9]
    with _gradebook(term) as gb:  # what the Formgrader writes
        for s in (keep, change):
            grade = gb.find_grade("test_sin_graph", A, A, s)
            grade.manual_score = 1.5
            comment = gb.find_comment("sin_graph", A, A, s)
            comment.manual_comment = "see me about the chain rule"
        gb.db.commit()
    nb = nbformat.read(root / "autograder" / "submitted" / change / A / NAME, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "sin_graph")
    cell.source += "\n# changed after the override\n"
    folder = root / "students" / change / A
    nbformat.write(nb, folder / NAME)
    _submit(term["exchange"], change, folder.parent, DUE - DAY / 2)
    term["course"].nbgrader("collect", A, "--update")
    _run(str(ROOT / "autograder" / "grade.py"), A, "--course", str(root), "--workers", "2", "--quiet",
         "--students", f"{keep},{change}")
    with _gradebook(term) as gb:
        assert gb.find_grade("test_sin_graph", A, A, keep).manual_score == 1.5
        assert gb.find_comment("sin_graph", A, A, keep).manual_comment == "see me about the chain rule"
        assert gb.find_grade("test_sin_graph", A, A, change).manual_score is None
        assert gb.find_comment("sin_graph", A, A, change).manual_comment is None
    rows = _report_rows(term)
    assert "test_sin_graph: 1.5 by hand" in rows[keep]["overrides"]
    assert rows[change]["overrides"] == "" and "dropped the manual score 1.5 of test_sin_graph" in rows[change]["notes"]
    report = (root / "autograder" / "reports" / A / "report.html").read_text()
    assert "graded by hand: test_sin_graph: 1.5 by hand" in report


def test_feedback_is_released_after_the_last_extension_showing_what_the_term_allows(term):
    root = term["root"]
    toml = root / "autograder" / "term.toml"
    good = toml.read_text()
    toml.write_text(_term_toml((NOW + DAY).isoformat()), encoding="utf-8")
    early = _run("-m", "instructor.feedback", "release", A, "--course", str(root), check=False)
    toml.write_text(good, encoding="utf-8")
    assert early.returncode == 2 and "ext_late" in early.stderr and "nothing was released" in early.stderr
    assert not list((term["exchange"] / "going-deeper" / "feedback").glob("*")) if \
        (term["exchange"] / "going-deeper" / "feedback").exists() else True
    done = _run("-m", "instructor.feedback", "release", A, "--course", str(root))
    assert "released feedback to 29 students" in done.stdout, done.stdout
    assert "absent" in done.stdout and "broken" in done.stdout
    from nbgrader.utils import notebook_hash

    released = term["exchange"] / "going-deeper" / "feedback"
    assert len(list(released.glob("*.html"))) == 29
    for s in (term["ids"][0], "offroster1"):  # where the student's Assignment List looks: a hash of their secret
        secret = (root / "autograder" / "submitted" / s / A / "submission_secret.txt").read_text()
        assert (released / f"{notebook_hash(secret=secret, notebook_id=A)}.html").is_file(), s
    from instructor.feedback import HIDDEN_NOTE, NOTHING_NOTE, leaks, page_text

    assert leaks(root / "autograder" / "feedback", A, [root / "solutions" / A / NAME],
                 [root / "notebooks" / A / NAME]) == []
    texts = {p.parent.name: page_text(p) for p in (root / "autograder" / "feedback").glob(f"*/{A}/*.html")}
    failing = [s for s, t in texts.items() if "lecture_forward" in t and NOTHING_NOTE in t]
    assert failing, "no feedback page hides a failed test_lecture_forward's message"
    assert any(HIDDEN_NOTE in t for t in texts.values())


def _read(path: Path, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=delimiter))


def test_canvas_export_is_what_canvas_imports(term):
    root, ids = term["root"], term["ids"]
    out = root / "exports" / "canvas.csv"
    out.parent.mkdir(exist_ok=True)
    done = _run("-m", "instructor.lms", "export", "canvas", A, "--out", str(out), "--course", str(root))
    rows = _read(out)
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"Computational graphs ({CANVAS_ID})"]
    assert rows[1][0].strip() == "Points Possible" and float(rows[1][5]) > 0
    by_login = {r[3]: r for r in rows[2:]}
    assert set(by_login) == set(term["roster"])  # every roster student, nobody else
    assert by_login["excused"][5] == "EX" and by_login["absent"][5] == "0" and by_login["broken"][5] == ""
    with _gradebook(term) as gb:
        for s in (ids[0], ids[1], ids[2], "ext_late", ids[7]):
            sub = gb.find_submission(A, s)
            assert float(by_login[s][5]) == pytest.approx(round(max(0.0, sub.score - sub.late_submission_penalty), 2))
        assert by_login[ids[2]][5] == "0"  # more than 7 days late
    assert "offroster1" in done.stdout and "broken" in done.stdout
    details = {r["student"]: r for r in csv.DictReader(open(out.with_name("canvas.details.csv"), encoding="utf-8"))}
    assert details["offroster1"]["on_roster"] == "no" and details["offroster1"]["exported"] != ""
    assert details[ids[1]]["status"] == "late" and float(details[ids[1]]["late_penalty"]) > 0
    # The same file through nbgrader's own export command and the plugin.
    again = root / "exports" / "canvas-nbgrader.csv"
    term["course"].nbgrader("export", "--exporter", "instructor.lms.CanvasExport", "--to", str(again),
                            f"--CanvasExport.course_root={root}")
    assert again.read_text() == out.read_text()


def test_moodle_export_with_decimal_commas(term):
    root, ids = term["root"], term["ids"]
    out = root / "exports" / "moodle.csv"
    out.parent.mkdir(exist_ok=True)
    _run("-m", "instructor.lms", "export", "moodle", "all", "--out", str(out), "--decimal", "comma",
         "--course", str(root))
    rows = _read(out, ";")
    assert rows[0] == ["First name", "Surname", "ID number", "Email address", "Graphs", "Graphs (feedback)"]
    assert len(rows) == 31
    by_id = {r[2]: r for r in rows[1:]}
    with _gradebook(term) as gb:
        sub = gb.find_submission(A, ids[0])
        want = round(sub.score - sub.late_submission_penalty, 2)
    value = by_id[str(5000 + term["roster"].index(ids[0]))]
    assert float(value[4].replace(",", ".")) == pytest.approx(want) and "." not in value[4]
    assert value[5].startswith("late 1 d 12 h: -")
    assert by_id[str(5000 + term["roster"].index("excused"))][4] == ""


def test_similarity_report_lists_the_planted_copies(term):
    root = term["root"]
    done = _run("-m", "instructor.similarity", A, "--course", str(root))
    found = json.loads((root / "autograder" / "reports" / A / "similarity.json").read_text())
    pairs = {frozenset((p["a"], p["b"])) if "a" in p else frozenset(p["students"]) for p in found["pairs"]}
    missed = [p for p in term["planted"] if frozenset(p) not in pairs]
    assert not missed, (missed, done.stdout)
    report = (root / "autograder" / "reports" / A / "report.html").read_text()
    assert "no grade was changed" in report
