"""Feedback release: every student's feedback at once, when the instructor says so, showing what term.toml allows.

    bash course.sh feedback release 01_computational_graphs [--now]

1. Refuses before the assignment's due date plus the longest extension (term.toml), unless ``--now``.
2. ``nbgrader generate_feedback`` with the course configuration, whose :class:`FeedbackVisibility` shows of
   each test cell what term.toml's ``[feedback]`` allows: ``message`` (the check's words, its expected
   values hidden), ``message+expected``, or ``nothing`` (the points only). Tracebacks are cut to their last
   line, so no line of a test cell's source travels through one.
3. Every feedback page is searched for the source lines of the hidden tests; one found stops the release
   (nothing is released) and says where.
4. ``nbgrader release_feedback`` puts the pages into the exchange, where students fetch them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import os
import re
import subprocess
import sys
from pathlib import Path

from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from instructor.term import ROOT, TermError, load_term

# "expected <value>, got ..." (the value may hold ". " as numpy prints arrays), or "(expected <value>)".
_EXPECTED = re.compile(r"\b(expected )(?:[^\n]+?(?=,\s*got\b)|[^()\n]*?(?=\)|;|\.\s|\.$|$))", re.M)
HIDDEN_NOTE = "expected value not shown"
NOTHING_NOTE = "This test's message is not part of the feedback; its points are above."
_HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n(.*?)^[ \t]*### END HIDDEN TESTS", re.S | re.M)
_TAG = re.compile(r"<[^>]+>")


def hide_expected(text: str) -> str:
    """A check's message with the values after 'expected' replaced by a note."""
    return _EXPECTED.sub(lambda m: m.group(1) + f"({HIDDEN_NOTE})", text)


class FeedbackVisibility(NbGraderPreprocessor):
    """Shows of each test cell's outputs what term.toml's ``[feedback]`` allows (see the module's docstring)."""

    term_file = Unicode("", help="the course's term.toml").tag(config=True)

    def preprocess(self, nb, resources):
        self._term = load_term(Path(self.term_file) if self.term_file else None)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            return cell, resources
        mode = self._term.visibility(cell.metadata["nbgrader"].get("grade_id", ""))
        if mode == "nothing":
            from nbformat.v4 import new_output

            cell.outputs = [new_output("stream", name="stdout", text=NOTHING_NOTE + "\n")] if cell.outputs else []
            return cell, resources
        for out in cell.outputs:
            if out.output_type == "error":
                if mode == "message":
                    out.evalue = hide_expected(out.evalue)
                out.traceback = [f"{out.ename}: {out.evalue}"]  # never a line of the test cell's source
            elif out.output_type == "stream" and mode == "message":
                out.text = hide_expected(out.text)
        return cell, resources


def hidden_lines(source: str, shortest: int = 12) -> list[str]:
    """The lines of a test cell's hidden blocks worth searching for (long enough not to occur by chance)."""
    lines = []
    for block in _HIDDEN_BLOCK.findall(source):
        for line in block.splitlines():
            line = line.strip()
            if len(line) >= shortest and not line.startswith("#"):
                lines.append(line)
    return lines


def page_text(path: Path) -> str:
    """A feedback page's text as a reader sees it: tags dropped, entities decoded, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub("", path.read_text(encoding="utf-8", errors="replace"))))


def leaks(feedback_dir: Path, assignment: str, sources: list[Path], releases: list[Path]) -> list[str]:
    """'<page>: <hidden line>' for every hidden test line that a feedback page of ``assignment`` shows. A line
    that the release shows too (a visible test builds the same engine) is no secret and is not searched for."""
    import nbformat

    public = {re.sub(r"\s+", " ", line.strip()) for release in releases
              for cell in nbformat.read(release, as_version=4).cells for line in cell.source.splitlines()}
    wanted = []
    for source in sources:
        for cell in nbformat.read(source, as_version=4).cells:
            if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
                wanted += [line for line in (re.sub(r"\s+", " ", x) for x in hidden_lines(cell.source))
                           if line not in public]
    found = []
    for page in sorted(feedback_dir.glob(f"*/{assignment}/*.html")):
        text = page_text(page)
        found += [f"{page}: {line}" for line in wanted if line in text]
    return found


def _nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = str(root / "autograder")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root / "autograder", env=env,
                          capture_output=True, text=True)


def _fail(message: str) -> int:
    print(f"course.sh feedback: {message}", file=sys.stderr)
    return 2


def release(root: Path, assignment: str, now: dt.datetime, early: bool) -> int:
    from nbgrader.api import Gradebook

    try:
        term = load_term(root=root)
    except TermError as exc:
        return _fail(str(exc))
    db = root / "autograder" / "gradebook.db"
    if not db.is_file():
        return _fail(f"no gradebook at {db}: run `bash course.sh release` and grade first")
    with Gradebook(f"sqlite:///{db}") as gb:
        if assignment not in {a.name for a in gb.assignments}:
            return _fail(f"assignment {assignment!r} is not in the gradebook: run `bash course.sh release` first")
        students = sorted(s.id for s in gb.students)
    last = term.last_due(assignment)
    if last is not None and now < last and not early:
        who = [s for s, d in term.extensions.get(assignment, {}).items() if d == last]
        return _fail(f"feedback for {assignment} opens {last:%Y-%m-%d %H:%M} UTC, when the last extension ends"
                     + (f" ({', '.join(who)})" if who else " (the due date)") + "; nothing was released. To release "
                     "it now anyway: bash course.sh feedback release " + assignment + " --now")
    autograded = root / "autograder" / "autograded"
    graded = sorted(p.parent.name for p in autograded.glob(f"*/{assignment}") if p.is_dir())
    if not graded:
        return _fail(f"no graded submission of {assignment} under {autograded}: grade first")
    done = _nbgrader(root, "generate_feedback", assignment, "--force")
    if done.returncode != 0:
        return _fail(f"nbgrader generate_feedback failed; nothing was released:\n{done.stdout[-2000:]}"
                     f"{done.stderr[-2000:]}")
    sources = sorted((root / "solutions" / assignment).glob("*.ipynb"))
    releases = sorted((root / "notebooks" / assignment).glob("*.ipynb"))
    if found := leaks(root / "autograder" / "feedback", assignment, sources, releases):
        return _fail("hidden test source appears in feedback; nothing was released:\n  " + "\n  ".join(found[:10]))
    done = _nbgrader(root, "release_feedback", assignment)
    if done.returncode != 0:
        return _fail(f"nbgrader release_feedback failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    released = sorted(p.parent.name for p in (root / "autograder" / "feedback").glob(f"*/{assignment}") if p.is_dir())
    without = sorted(set(students) - set(released))
    print(f"{assignment}: released feedback to {len(released)} students (the exchange's feedback folder; students "
          "fetch it with the Assignment List or `nbgrader fetch_feedback`)."
          + (f" No feedback for {len(without)} without a graded submission: {', '.join(without)}." if without else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh feedback", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="generate and release every student's feedback for an assignment")
    rel.add_argument("assignment")
    rel.add_argument("--course", type=Path, default=ROOT, help="course root (default: this repository)")
    rel.add_argument("--now", action="store_true", help="release before the last extension ends")
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return release(args.course.resolve(), args.assignment, now, args.now)


if __name__ == "__main__":
    sys.exit(main())
