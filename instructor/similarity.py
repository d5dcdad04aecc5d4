"""Similar answers across the class, with copydetect, for the instructor to judge.

    bash course.sh similarity 01_computational_graphs        # or: all
    bash course.sh similarity all --threshold 0.5 --submissions path/to/submitted

For every student of the submissions folder (``autograder/submitted/<student>/<assignment>/*.ipynb``, found
as the grading command finds them), the student's own code for the assignment: the answer cells (the cells
that the course's source notebook ``solutions/<A>/`` marks as solutions, matched by grade id) and the code
cells the student added, never the course's set-up, locked or test cells nor its plain cells as released.
Nothing of a submission is run; a notebook that cannot be read is listed with the reason.

Every pair of students is compared with copydetect's winnowing fingerprints (``copydetect.CodeFingerprint``,
``compare_files``) on its tokenized code, where every name (variable, function, attribute) and string is a
placeholder and comments and blank lines are gone: renaming variables, adding comments or reordering
functions does not hide a copy. The
release's code (``notebooks/<A>/``: the signatures, ``raise NotImplementedError()`` placeholders, the
course's helper calls and every other released code cell) is boilerplate: what every student starts from
never counts as similar.

``autograder/reports/<A>/similarity.json`` receives the pairs at or above the threshold, with the matching
lines of both side by side, cell by cell; then ``grade.py report`` rebuilds ``report.html``, whose section
(``autograder/similarity_report.py``) lists them. A listed pair is a reason to look, not a finding: short,
natural code is written alike by people who never met. Nothing is written to the gradebook and no grade
is changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROG = "bash course.sh similarity"

# The pair's score and the default threshold, both chosen by measurement (benchmarks/similarity_planted.py:
# synthetic classes of notebook 01, 3 seeds each, with planted copies). copydetect gives two fractions per
# pair: how much of A's fingerprinted code is found in B, and of B's in A. The score is the smaller one: a
# pair is listed when each of the two has most of its code in common with the other. Every planted copy
# (renamed variables, reordered functions, added comments: what tokenizing undoes) scores 1.0 by min, max and
# mean alike, so the choice is decided by the honest pairs, which score lower by min: highest honest pair in
# classes of 30 honest students 0.79 by min, 0.82 by mean, 0.85 by max; at 0.6, max lists about twice as
# many honest pairs as min. The price of min: a copier who adds much work of their own lowers their own
# fraction and so the score (the report shows both fractions). At 0.8: every planted copy found, no honest
# pair of 3 x 435 listed (30 honest students), 4 of 3 x 1770 (60); at 0.6: 56 and 174.
THRESHOLD = 0.8
# copydetect's defaults (noise 25, guarantee 25: winnowing window 1, every k-gram is a fingerprint). A
# window of 1 makes the result independent of Python's per-process string hashing (winnowing picks the
# smallest hash of each window, which would change from run to run); the files are small, so every k-gram
# costs nothing. 25 characters of tokenized code are about one statement ("V=V.V(V.V,V=(V,),V=(V.V(V.V),)"
# is one line of an answer).
NOISE_T = 25
GUARANTEE_T = 25
SCORE = "min"
MAX_VIEWS = 40  # cell pairs shown per listed pair
MAX_VIEW_LINES = 80  # lines of a cell shown in full; a longer cell is shown around its matching lines
CONTEXT = 2  # lines shown around matching lines in a long cell
MAX_POSITIONS = 5  # occurrences of one repeated fingerprint that are paired for the side-by-side view
MAX_SHARED = 20_000  # shared fingerprints placed in the side-by-side view (the first in A's file)


class Refused(Exception):
    """Bad input: one line for the instructor, exit 2."""


@dataclass
class Cell:
    label: str  # the answer cell's grade id, or "own cell N (after GRADE_ID)" for a cell the student added
    source: str


@dataclass
class Student:
    student: str
    notebooks: list[str]  # the submitted files, relative to the submissions folder
    cells: list[Cell] = field(default_factory=list)


@dataclass
class Course:
    """What the course says about one assignment's notebooks."""

    assignment: str
    notebooks: list[str]  # stems
    answers: dict[str, list[str]]  # notebook -> answer grade ids (code cells marked as solutions)
    course_ids: dict[str, set[str]]  # notebook -> every grade id of the source notebook
    released: dict[str, list[str]]  # notebook -> the release's code cells (the boilerplate)
    released_answers: dict[str, list[str]] = field(default_factory=dict)  # notebook -> its answer cells as released

    def boilerplate(self) -> list[str]:
        """What every student starts from: each released code cell, and the released answer cells one after the
        other, as a student's file holds them (so a fingerprint across two untouched answers is boilerplate too)."""
        return [text for nb in self.notebooks for text in self.released[nb]] + [
            "\n".join(self.released_answers[nb]) for nb in self.notebooks]
    notes: list[str] = field(default_factory=list)


# -- the course and the submissions -----------------------------------------------------------------
def _autograder_imports():
    """grade.py's discovery and the trust boundary's reader (no side effects on import)."""
    if str(REPO / "autograder") not in sys.path:
        sys.path.insert(0, str(REPO / "autograder"))
    import grade  # noqa: PLC0415
    from sandbox import boundary  # noqa: PLC0415

    return grade, boundary


def _nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata")
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbg if isinstance(nbg, dict) else {}


def _source(cell: dict) -> str:
    value = cell.get("source")
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _release_from_source(text: str) -> str:
    """What nbgrader's release makes of a solution cell (used only when the course has no release)."""
    text = re.sub(r"^([ \t]*)### BEGIN SOLUTION.*?^[ \t]*### END SOLUTION[^\n]*",
                  lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()", text,
                  flags=re.S | re.M)
    return re.sub(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", "", text, flags=re.S | re.M)


def load_course(root: Path, assignment: str) -> Course:
    import nbformat

    folder = root / "solutions" / assignment
    sources = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not sources:
        raise Refused(f"no notebook in {folder}")
    course = Course(assignment, [p.stem for p in sources], {}, {}, {})
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        ids = [_nbgrader(c).get("grade_id") for c in nb.cells]
        course.course_ids[path.stem] = {g for g in ids if isinstance(g, str)}
        course.answers[path.stem] = [_nbgrader(c)["grade_id"] for c in nb.cells if c.cell_type == "code"
                                     and _nbgrader(c).get("solution") and _nbgrader(c).get("grade_id")]
        release = root / "notebooks" / assignment / path.name
        if release.is_file():
            cells = [c for c in nbformat.read(release, as_version=4).cells if c.cell_type == "code"]
        else:
            course.notes.append(f"no release at {release}: the boilerplate was derived from the solutions")
            cells = [nbformat.v4.new_code_cell(_release_from_source(c.source), metadata=c.metadata)
                     for c in nb.cells if c.cell_type == "code"]
        course.released[path.stem] = [c.source for c in cells]
        by_id = {_nbgrader(c).get("grade_id"): c.source for c in cells}
        course.released_answers[path.stem] = [by_id[g] for g in course.answers[path.stem] if g in by_id]
    return course


def student_cells(cells: list[dict], course: Course, notebook: str) -> list[Cell]:
    """The student's own code in a submitted notebook: answers (by the course's grade ids, the first of each)
    and the code cells the student added (no grade id of the course; a course cell as released is not one).
    Never a set-up, locked or test cell of the course."""
    answers = set(course.answers[notebook])
    course_ids = course.course_ids[notebook]
    released = {text.strip() for text in course.released[notebook]}
    prefix = f"{notebook}: " if len(course.notebooks) > 1 else ""
    out, seen, anchor, own = [], set(), None, 0
    for cell in cells:
        gid = _nbgrader(cell).get("grade_id")
        gid = gid if isinstance(gid, str) and 0 < len(gid) <= 200 else None
        if gid in course_ids and gid not in answers:
            anchor = gid
            continue  # the course's set-up, locked, test or other graded cell
        if cell.get("cell_type") != "code":
            continue
        text = _source(cell)
        if gid in answers and gid not in seen:
            seen.add(gid)
            anchor = gid
            out.append(Cell(prefix + gid, text))
            continue
        if not text.strip() or text.strip() in released:
            continue  # empty, or the course's plain cell as released
        own += 1
        where = f", after {anchor}" if anchor else ""
        out.append(Cell(f"{prefix}own cell {own}{where}", text))
    return out


# -- fingerprints and comparison ----------------------------------------------------------------------
@dataclass
class Document:
    """One student's code as one Python file: each cell after a comment line that names it."""

    text: str
    line_starts: list[int]  # character offset of every line
    line_cell: list[int | None]  # cell index of every line (None: a separator)
    line_in_cell: list[int]  # 1-based line number within its cell
    labels: list[str]
    cell_lines: list[list[str]]

    @classmethod
    def build(cls, cells: list[Cell]) -> Document:
        lines, line_cell, line_in_cell, labels, cell_lines = [], [], [], [], []
        for i, cell in enumerate(cells):
            body = cell.source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            lines.append(f"# ---- {' '.join(cell.label.split())} ----")
            line_cell.append(None)
            line_in_cell.append(0)
            lines += body
            line_cell += [i] * len(body)
            line_in_cell += list(range(1, len(body) + 1))
            labels.append(cell.label)
            cell_lines.append(body)
        starts, pos = [], 0
        for line in lines:
            starts.append(pos)
            pos += len(line) + 1
        return cls("\n".join(lines) + "\n", starts, line_cell, line_in_cell, labels, cell_lines)

    def line_of(self, char: int) -> int:
        return max(0, bisect_right(self.line_starts, char) - 1)

    def has_code(self, line: int) -> bool:
        """Whether a line can carry tokens (a blank or comment-only line inside a match is not marked)."""
        cell = self.line_cell[line]
        text = self.cell_lines[cell][self.line_in_cell[line] - 1].strip() if cell is not None else ""
        return bool(text) and not text.startswith("#")


def _raw_positions(fp, positions):
    """copydetect's own mapping from tokenized-code positions back to the file's characters."""
    import numpy as np

    positions = np.asarray(positions, dtype=int)
    if len(fp.offsets) == 0:
        return positions
    where = np.clip(np.searchsorted(fp.offsets[:, 0], positions), 0, fp.offsets.shape[0] - 1)
    return positions + fp.offsets[:, 1][where]


def pair_views(fa, fb, doc_a: Document, doc_b: Document) -> list[dict]:
    """The matching lines of two documents, cell against cell: for every fingerprint the two share, each
    occurrence in A paired with each in B; a fingerprint belongs to the cell of its middle character."""
    k = fa.k
    views: dict[tuple[int, int], dict] = {}
    shared = sorted(fa.hashes & fb.hashes, key=lambda h: (min(fa.hash_idx[h]), h))[:MAX_SHARED]
    for h in shared:
        pa, pb = fa.hash_idx[h][:MAX_POSITIONS], fb.hash_idx[h][:MAX_POSITIONS]
        span_a = _raw_positions(fa, [p for q in pa for p in (q, q + k // 2, q + k - 1)]).reshape(-1, 3)
        span_b = _raw_positions(fb, [p for q in pb for p in (q, q + k // 2, q + k - 1)]).reshape(-1, 3)
        for first_a, mid_a, last_a in span_a:
            for first_b, mid_b, last_b in span_b:
                ca = doc_a.line_cell[doc_a.line_of(int(mid_a))]
                cb = doc_b.line_cell[doc_b.line_of(int(mid_b))]
                if ca is None or cb is None:
                    continue
                view = views.setdefault((ca, cb), {"a": set(), "b": set(), "n": 0})
                view["n"] += 1
                for doc, cell, first, last, side in ((doc_a, ca, first_a, last_a, "a"),
                                                     (doc_b, cb, first_b, last_b, "b")):
                    for line in range(doc.line_of(int(first)), doc.line_of(int(last)) + 1):
                        if doc.line_cell[line] == cell and doc.has_code(line):
                            view[side].add(doc.line_in_cell[line])
    kept = sorted(views.items(), key=lambda item: (-item[1]["n"], item[0]))[:MAX_VIEWS]  # the largest, in A's order
    return [{"a_cell": doc_a.labels[ca], "b_cell": doc_b.labels[cb], "fingerprints": view["n"],
             "a": _side(doc_a.cell_lines[ca], view["a"]), "b": _side(doc_b.cell_lines[cb], view["b"])}
            for (ca, cb), view in sorted(kept, key=lambda item: item[0])]


def _runs(numbers: set[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return runs


def _side(lines: list[str], matched: set[int]) -> dict:
    """One column of a view: the matching line runs, and the cell's lines (all of a short cell; of a long one,
    those around the matching lines), each as [line number, text, matched]; [null, "...", false] is a gap."""
    if len(lines) <= MAX_VIEW_LINES:
        shown = range(1, len(lines) + 1)
    else:
        shown = sorted({n for m in matched for n in range(m - CONTEXT, m + CONTEXT + 1) if 1 <= n <= len(lines)})
    rows, last = [], 0
    for n in shown:
        if n != last + 1:
            rows.append([None, "...", False])
        rows.append([n, lines[n - 1], n in matched])
        last = n
    if last < len(lines):
        rows.append([None, "...", False])
    return {"matched": _runs(matched), "lines": rows}


def score(fractions: tuple[float, float], how: str = SCORE) -> float:
    a, b = fractions
    return {"max": max(a, b), "min": min(a, b), "mean": (a + b) / 2}[how]


@dataclass
class Comparison:
    students: list[Student]
    pairs: list[tuple[int, int, float, float, int]]  # (i, j, fraction_i, fraction_j, overlapping tokens): all
    fingerprints: list = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # students with nothing of their own after the boilerplate


def compare(students: list[Student], boilerplate: list[str], noise_t: int = NOISE_T,
            guarantee_t: int = GUARANTEE_T) -> Comparison:
    """Every pair of ``students`` with copydetect, the release's code ``boilerplate`` discounted. Each
    student's code goes to a temporary .py file (copydetect reads files); nothing is run."""
    import numpy as np
    from copydetect import CodeFingerprint, compare_files

    docs = [Document.build(s.cells) for s in students]
    window = guarantee_t - noise_t + 1
    with tempfile.TemporaryDirectory(prefix="similarity-") as tmp:
        bp_path = Path(tmp) / "boilerplate.py"
        bp_path.write_text("\n\n".join(boilerplate) + "\n", encoding="utf-8")
        bp = CodeFingerprint(str(bp_path), noise_t, 1, language="python")
        bp_hashes = np.unique(np.array(list(bp.hashes), dtype=np.int64))
        prints = []
        for i, doc in enumerate(docs):
            path = Path(tmp) / f"student{i:05d}.py"
            path.write_text(doc.text, encoding="utf-8")
            prints.append(CodeFingerprint(str(path), noise_t, window, bp_hashes, language="python"))
    result = Comparison(students, [], prints, docs,
                        [s.student for s, f in zip(students, prints) if f.token_coverage == 0])
    for i in range(len(students)):
        for j in range(i + 1, len(students)):
            overlap, (fi, fj), _ = compare_files(prints[i], prints[j])
            result.pairs.append((i, j, float(fi), float(fj), int(overlap)))
    return result


# -- one assignment -------------------------------------------------------------------------------------
def read_class(root: Path, submissions: Path, course: Course) -> tuple[list[Student], list[dict], list[str]]:
    """The students with code to compare, those whose notebook could not be read (with why), and those
    without a submission for the assignment."""
    grade, boundary = _autograder_imports()
    students, unread, absent = [], [], []
    for found in grade.discover(submissions, course.assignment, None, course.notebooks):
        student = Student(found.student, [])
        for row in found.rows:
            if row.status == "missing":
                continue
            unread.append({"student": found.student, "notebook": row.notebook, "why": row.reason})
        for path, notebook in found.tasks:
            try:
                cells = boundary.read_submission(path)
            except boundary.NotGradable as exc:
                unread.append({"student": found.student, "notebook": notebook, "why": str(exc)})
                continue
            except (OSError, ValueError, RecursionError) as exc:  # never a reason to stop the others
                unread.append({"student": found.student, "notebook": notebook, "why": f"cannot be read ({exc})"})
                continue
            student.notebooks.append(str(path.relative_to(submissions)))
            student.cells += [Cell(c.label, boundary.clean_text(c.source[: boundary.MAX_CELL_SOURCE]))
                              for c in student_cells(cells, course, notebook)]
        if student.notebooks:
            students.append(student)
        elif not found.tasks and all(r.status == "missing" for r in found.rows):
            absent.append(found.student)
    return students, unread, absent


def analyse(root: Path, submissions: Path, assignment: str, threshold: float = THRESHOLD,
            noise_t: int = NOISE_T, guarantee_t: int = GUARANTEE_T, how: str = SCORE) -> dict:
    """The similarity report of one assignment, as similarity.json holds it (nothing is written here)."""
    course = load_course(root, assignment)
    students, unread, absent = read_class(root, submissions, course)
    started = time.perf_counter()
    result = compare(students, course.boilerplate(), noise_t, guarantee_t)
    listed, below = [], 0.0
    for i, j, fi, fj, overlap in result.pairs:
        s = score((fi, fj), how)
        if s >= threshold:
            listed.append((s, i, j, fi, fj, overlap))
        else:
            below = max(below, s)
    listed.sort(key=lambda t: (-t[0], students[t[1]].student, students[t[2]].student))
    pairs = []
    for s, i, j, fi, fj, overlap in listed:
        pairs.append({
            "a": students[i].student, "b": students[j].student, "score": round(s, 4),
            "fraction_a": round(fi, 4), "fraction_b": round(fj, 4), "overlap_tokens": overlap,
            "notebook_a": students[i].notebooks, "notebook_b": students[j].notebooks,
            "views": pair_views(result.fingerprints[i], result.fingerprints[j], result.documents[i],
                                result.documents[j]),
        })
    import copydetect

    return {
        "assignment": assignment,
        "tool": f"copydetect {copydetect.__version__}",
        "when": dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "threshold": threshold,
        "score": {"max": "the larger of the pair's two fractions", "min": "the smaller of the pair's two fractions",
                  "mean": "the mean of the pair's two fractions"}[how],
        "score_definition": how,
        "noise_threshold": noise_t,
        "guarantee_threshold": guarantee_t,
        "window_size": guarantee_t - noise_t + 1,
        "compared": "answer cells and the students' own code cells; the release's code is boilerplate",
        "students_compared": len(students),
        "pairs_compared": len(result.pairs),
        "students": [s.student for s in students],
        "without_own_code": result.empty,
        "could_not_be_read": unread,
        "no_submission": absent,
        "highest_score_below_threshold": round(below, 4),
        "seconds": round(time.perf_counter() - started, 2),
        "notes": course.notes,
        "grades_changed": False,
        "pairs": pairs,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rebuild_report(root: Path, assignment: str, submissions: Path | None) -> tuple[bool, str]:
    """``grade.py report A``: report.html again, with the similarity section. (ok, why not)."""
    command = [sys.executable, str(REPO / "autograder" / "grade.py"), "report", assignment, "--course", str(root)]
    if submissions is not None:
        command += ["--submissions", str(submissions)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode == 0:
        return True, ""
    lines = [line for line in (run.stderr + "\n" + run.stdout).splitlines() if line.strip()]
    return False, lines[-1].strip() if lines else f"grade.py report exited {run.returncode}"


def summary(data: dict, report: Path) -> str:
    pairs = data["pairs"]
    shown = ", ".join(f"{p['a']} ~ {p['b']} {p['score']:.2f}" for p in pairs[:10])
    more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
    n = data["students_compared"]
    return (f"{data['assignment']}: compared {n} student{'s' * (n != 1)}; {len(pairs)} pair{'s' * (len(pairs) != 1)} "
            f"at or above {data['threshold']:.2f}" + (f": {shown}{more}" if pairs else "") + f" (report: {report})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="an assignment id (01_computational_graphs) or 'all'")
    parser.add_argument("--course", type=Path, default=REPO, help="course root (default: this repository)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"list pairs whose score is at least this (0 to 1, default {THRESHOLD})")
    parser.add_argument("--submissions", type=Path, help="submissions folder (default: autograder/submitted)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except Refused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from instructor.course import assignments

    root = args.course.resolve()
    if not 0.0 < args.threshold <= 1.0:
        raise Refused(f"--threshold must be above 0 and at most 1, not {args.threshold}")
    if not (root / "solutions").is_dir():
        raise Refused(f"no solutions/ folder in {root}: not a course root")
    known = assignments(root)
    wanted = known if args.assignment == "all" else [args.assignment]
    for a in wanted:
        if a not in known:
            raise Refused(f"no assignment {a!r} in {root / 'solutions'} ({', '.join(known) or 'none'})")
    submissions = (args.submissions or root / "autograder" / "submitted").absolute()
    if not submissions.is_dir() or submissions.is_symlink():
        raise Refused(f"no submissions folder at {submissions}: collect submissions first (see the README)")
    for a in wanted:
        data = analyse(root, submissions, a, args.threshold)
        out = root / "autograder" / "reports" / a
        write_json(out / "similarity.json", data)
        for row in data["could_not_be_read"]:
            print(f"{a}: {row['student']} could not be read: {row['why']}")
        print(summary(data, out / "report.html"))
        ok, why = rebuild_report(root, a, args.submissions.absolute() if args.submissions else None)
        if not ok:
            print(f"{a}: report.html was not rebuilt ({why}); the pairs are in {out / 'similarity.json'}")
    print("Nothing was written to the gradebook; no grade was changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
