"""The similarity report (``bash course.sh similarity``, instructor/similarity.py) on a synthetic class.

A scratch course with the course's own layout and notebook 01, released once (nbgrader, which also makes
the gradebook), and a synthetic class (tests/synthetic_class.py) of 12 honest students and 3 planted copiers
(renamed variables, reordered functions, added comments), plus: a student who hands in the release
untouched, one whose notebook is not JSON, and one who copied a classmate and left a ``<script>`` in a
comment. The command runs once, as the instructor runs it, in a subprocess from another folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat
import pytest

from instructor import similarity
from instructor.scratch import ROOT, ScratchCourse, answer_ids
from synthetic_class import TRANSFORMS, make_class, submit_all

sys.path.insert(0, str(ROOT / "autograder"))
from similarity_report import section_html  # noqa: E402

A = "01_computational_graphs"
SCRIPT = '# <script>alert("copied")</script>'


def run_similarity(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-m", "instructor.similarity", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    course = ScratchCourse(tmp_path_factory.mktemp("similarity") / "course", course_config=True)
    course.add_source(A)
    release = course.generate(A)
    made = make_class(A, honest=12, planted=3, seed=0)
    name = made["name"]
    submit_all(course.submitted_dir, made["notebooks"], A, name)
    # The release untouched: every answer a placeholder.
    course.submit("release", A, nbformat.read(release / name, as_version=4), name)
    # Not a notebook at all.
    (course.submitted_dir / "broken" / A).mkdir(parents=True)
    (course.submitted_dir / "broken" / A / name).write_text("{ this is not JSON", encoding="utf-8")
    # A copy of an honest student, with markup in a comment of an answer.
    original = made["honest"][0]
    copied = nbformat.from_dict(made["notebooks"][original])
    cell = next(c for c in copied.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "sin_graph")
    cell.source = SCRIPT + "\n" + cell.source
    course.submit("xss", A, copied, name)
    # Saved under another name, as a browser saves a second download: still this student's notebook.
    renamed = course.submitted_dir / made["honest"][1] / A
    (renamed / name).rename(renamed / f"{Path(name).stem} (1).ipynb")
    run = run_similarity(A, "--course", str(course.root), cwd=course.root.parent)
    out = course.root / "autograder" / "reports" / A
    data = json.loads((out / "similarity.json").read_text(encoding="utf-8"))
    return {"course": course, "made": made, "run": run, "out": out, "data": data, "original": original,
            "name": name}


def _pairs(data: dict) -> set[frozenset]:
    return {frozenset((p["a"], p["b"])) for p in data["pairs"]}


def test_the_command_runs_and_says_what_it_found(klass):
    run, data = klass["run"], klass["data"]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{A}: compared {data['students_compared']} students; {len(data['pairs'])} pairs at or above 0.80" in run.stdout
    assert str(klass["out"] / "report.html") in run.stdout
    assert "report.html was not rebuilt" not in run.stdout  # the scratch course has its gradebook
    report = (klass["out"] / "report.html").read_text(encoding="utf-8")
    assert "Similar answers" in report and "no grade was changed" in report  # grade.py report adds the section
    assert "no grade was changed" in run.stdout
    assert data["grades_changed"] is False and data["threshold"] == similarity.THRESHOLD
    assert data["noise_threshold"] == similarity.NOISE_T and data["guarantee_threshold"] == similarity.GUARANTEE_T


def test_a_notebook_saved_under_another_name_is_compared(klass):
    student = klass["made"]["honest"][1]
    assert student in klass["data"]["students"]
    assert not [u for u in klass["data"]["could_not_be_read"] if u["student"] == student]


def test_which_cells_are_the_students_own():
    """Answers by the course's grade ids; the student's own code cells; never the course's other cells."""
    course = similarity.load_course(ROOT, A)
    plain = next(t for t in course.released[A] if t.startswith("x, y, z = -2.0"))  # a course cell without metadata
    setup = {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "setup"}}, "source": "import math"}
    cells = [
        setup,
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "sin_graph", "solution": False}},
         "source": ["def sin_graph(x, y):\n", "    return 1"]},  # an answer, whatever its metadata says
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "test_sin_graph"}}, "source": "assert True"},
        {"cell_type": "code", "metadata": {}, "source": plain},  # the course's plain cell, as released
        {"cell_type": "code", "metadata": {}, "source": "print(sin_graph(1, 2))"},  # the student's own
        {"cell_type": "markdown", "metadata": {}, "source": "my notes"},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "sin_graph"}}, "source": "x = 1"},  # a duplicate
        {"cell_type": "code", "metadata": "not a dict", "source": 42},  # malformed: no text
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "value_class"}}, "source": "class Value: ..."},
        {"cell_type": "code", "source": "def helper():\n    return 2"},
    ]
    got = [(c.label, c.source) for c in similarity.student_cells(cells, course, A)]
    assert got == [("sin_graph", "def sin_graph(x, y):\n    return 1"),
                   ("own cell 1, after test_sin_graph", "print(sin_graph(1, 2))"),
                   ("own cell 2, after test_sin_graph", "x = 1"),
                   ("own cell 3, after value_class", "def helper():\n    return 2")]


def test_every_planted_pair_is_listed(klass):
    wanted = {frozenset(p) for p in klass["made"]["planted"]} | {frozenset(("xss", klass["original"]))}
    assert wanted <= _pairs(klass["data"])
    for p in klass["data"]["pairs"]:
        if frozenset((p["a"], p["b"])) in wanted:
            # renaming, reordering and comments are what copydetect's tokenizing undoes
            assert p["score"] == 1.0 and p["fraction_a"] == p["fraction_b"] == 1.0


def test_few_honest_pairs_are_listed(klass):
    """Measured (benchmarks/similarity_planted.py, 3 classes of 30 honest students each): at the default
    threshold no honest pair of 1305 is listed, the highest honest score being 0.79; this class of 12 has
    66 honest pairs, the highest at 0.69. A copier also resembles whoever the copied student resembles, so
    such a pair may be listed too: none is in this class."""
    honest = set(klass["made"]["honest"])
    listed = [p for p in klass["data"]["pairs"] if p["a"] in honest and p["b"] in honest]
    assert listed == []
    assert len(klass["data"]["pairs"]) == len(klass["made"]["planted"]) + 1
    assert klass["data"]["highest_score_below_threshold"] < 0.75


def test_the_untouched_release_is_similar_to_no_one(klass):
    data = klass["data"]
    assert "release" in data["students"] and data["without_own_code"] == ["release"]
    assert all("release" not in pair for pair in _pairs(data))
    # Not only below the threshold: nothing at all in common with anyone, the release being boilerplate.
    course = similarity.load_course(klass["course"].root, A)
    students, _, _ = similarity.read_class(klass["course"].root, klass["course"].submitted_dir, course)
    result = similarity.compare(students, course.boilerplate())
    index = [s.student for s in students].index("release")
    assert [(s.label) for s in students[index].cells] == answer_ids(
        nbformat.read(klass["course"].source_dir / A / klass["name"], as_version=4))
    for i, j, fi, fj, overlap in result.pairs:
        if index in (i, j):
            assert (fi, fj, overlap) == (0, 0, 0), (students[i].student, students[j].student)


def test_side_by_side_lines_are_mapped_to_grade_ids(klass):
    made, data = klass["made"], klass["data"]
    answers = set(answer_ids(nbformat.read(klass["course"].source_dir / A / klass["name"], as_version=4)))
    copier, original = made["planted"][0]
    pair = next(p for p in data["pairs"] if {p["a"], p["b"]} == {copier, original})
    assert pair["views"], pair
    cells = {}
    for student in (pair["a"], pair["b"]):
        nb = made["notebooks"][student]
        cells[student] = {c.metadata.nbgrader.grade_id: c.source.split("\n") for c in nb.cells
                          if c.metadata.get("nbgrader", {}).get("grade_id") in answers}
    seen = set()
    for view in pair["views"]:
        for side, student in (("a", pair["a"]), ("b", pair["b"])):
            cell = view[f"{side}_cell"]
            assert cell in answers
            lines = cells[student][cell]
            for number, text, matched in view[side]["lines"]:
                if number is not None:
                    assert lines[number - 1] == text  # the line as the student wrote it, numbered in its cell
            for first, last in view[side]["matched"]:
                assert 1 <= first <= last <= len(lines)
                assert any(lines[n - 1].strip() for n in range(first, last + 1))
        if view["a_cell"] == view["b_cell"]:
            seen.add(view["a_cell"])
    assert seen == answers  # every copied answer is shown against itself


def test_the_report_section_is_escaped_html(klass):
    text = section_html(klass["out"])
    assert "for the instructor to judge; no grade was changed" in text.lower()
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;copied&quot;)&lt;/script&gt;" in text
    assert "xss" in text and klass["original"] in text
    assert section_html(klass["out"] / "nowhere") == ""


def test_section_html_survives_a_damaged_file(tmp_path):
    (tmp_path / "similarity.json").write_text('{"pairs": [{"a": "<b>x</b>", "views": [{"a": 3}]}]}', encoding="utf-8")
    text = section_html(tmp_path)
    assert "<b>x" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    (tmp_path / "similarity.json").write_text("[not json", encoding="utf-8")
    assert "could not be read" in section_html(tmp_path)


def test_an_unreadable_notebook_is_listed_not_fatal(klass):
    data, run = klass["data"], klass["run"]
    (row,) = [u for u in data["could_not_be_read"] if u["student"] == "broken"]
    assert "not a readable notebook" in row["why"]
    assert "broken" not in data["students"]
    assert "broken could not be read" in run.stdout
    assert "broken" in section_html(klass["out"])


def test_bad_input_is_one_line_and_exit_2(klass, tmp_path):
    root = str(klass["course"].root)
    for args, words in ((["99_nope", "--course", root], "no assignment"),
                        ([A, "--course", root, "--submissions", str(tmp_path / "none")], "no submissions folder"),
                        ([A, "--course", str(tmp_path)], "not a course root"),
                        ([A, "--course", root, "--threshold", "1.5"], "--threshold")):
        run = run_similarity(*args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bash course.sh similarity: ") and words in lines[0], lines


def test_a_course_under_a_path_with_spaces(klass, tmp_path):
    root = tmp_path / "with space" / "the course"
    shutil.copytree(klass["course"].root, root)
    shutil.rmtree(root / "autograder" / "reports")
    run = run_similarity(A, "--course", str(root), "--submissions", str(root / "autograder" / "submitted"),
                         cwd=tmp_path / "with space")
    assert run.returncode == 0, run.stderr
    data = json.loads((root / "autograder" / "reports" / A / "similarity.json").read_text(encoding="utf-8"))
    assert _pairs(data) == _pairs(klass["data"])
    assert [p["score"] for p in data["pairs"]] == [p["score"] for p in klass["data"]["pairs"]]
    assert (root / "autograder" / "reports" / A / "report.html").is_file()
    # Without a gradebook the report cannot be rebuilt: said, and the pairs are still written.
    (root / "autograder" / "gradebook.db").unlink()
    (root / "autograder" / "reports" / A / "similarity.json").unlink()
    run = run_similarity(A, "--course", str(root), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "report.html was not rebuilt (" in run.stdout and "gradebook" in run.stdout
    assert (root / "autograder" / "reports" / A / "similarity.json").is_file()


# -- the synthetic class itself ---------------------------------------------------------------------
def _value_class() -> str:
    nb = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "value_class")


def _summary(x, depth: int = 0):
    if depth > 4:
        return "..."
    if isinstance(x, BaseException):
        return type(x).__name__
    if isinstance(x, float):
        return round(x, 9) if math.isfinite(x) else repr(x)
    if isinstance(x, (tuple, list)):
        return [_summary(v, depth + 1) for v in x]
    if type(x).__name__ == "Value":
        return ("Value", _summary(x.data), _summary(list(x.local_grads)), x.op, [p.label for p in x.parents])
    return repr(x)


def _behaviour(nb: nbformat.NotebookNode, answers: set[str]) -> list:
    """What a notebook's answers do on a few inputs (its answer and own cells run; nothing of the course's)."""
    ns: dict = {"__name__": "synthetic"}
    exec("import math\nimport numpy as np\n" + _value_class(), ns)  # noqa: S102 - our own generated code
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.cell_type == "code" and (gid in answers or "synthetic" in cell.metadata):
                try:
                    exec(cell.source, ns)  # noqa: S102
                except Exception:  # noqa: BLE001 - a wrong answer may fail; it must fail alike in the copy
                    pass

    def call(name, *args):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _summary(ns[name](*args))
        except Exception as exc:  # noqa: BLE001
            return _summary(exc)

    out = [call("sin_graph", 0.3, -1.2), call("lecture_forward", -2.0, 5.0, -4.0),
           call("lecture_local_grads", -2.0, 5.0, -4.0), call("lecture_backprop", -2.0, 5.0, -4.0)]
    V = ns["Value"]
    try:
        a, b = V(2.0, label="a"), V(-3.0, label="b")
        c = ns["add"](a, b)
        c.label = "c"
        d = ns["mul"](c, a)
        d.label = "d"
        e = ns["relu"](ns["sin"](d))
        e.label = "e"
        out += [_summary(n) for n in (c, d, e)]
        out.append([n.label for n in ns["topological_order"](e)])
        ns["backward"](e)
        out.append([_summary(n.grad) for n in (a, b, c, d, e)])
    except Exception as exc:  # noqa: BLE001
        out.append(_summary(exc))
    return out


def test_planted_copies_behave_like_their_originals():
    made = make_class(A, honest=10, planted=6, seed=3)  # every kind of transformation once
    answers = set(answer_ids(nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)))
    assert sorted(made["transforms"].values()) == sorted(TRANSFORMS)
    for copier, original in made["planted"]:
        nb_c, nb_o = made["notebooks"][copier], made["notebooks"][original]
        assert _behaviour(nb_c, answers) == _behaviour(nb_o, answers), (copier, original, made["transforms"][copier])
        changed = [gid for gid in answers if _cell(nb_c, gid) != _cell(nb_o, gid)]
        assert changed, f"{copier} copied {original} without any transformation"


def _cell(nb, gid):
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
