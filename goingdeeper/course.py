"""The course pipeline: strip, release, check and execute the notebooks.

Run as ``python -m goingdeeper.course COMMAND`` (``bash course.sh`` wraps it):

* ``strip``   remove outputs, execution counts and widget state from every
  notebook under ``solutions/`` and ``notebooks/``;
* ``release`` regenerate ``notebooks/`` from ``solutions/`` with nbgrader
  (``notebooks/`` is never edited by hand);
* ``check``   fail when ``notebooks/`` differs from a fresh release or a
  committed notebook carries outputs or widget state;
* ``execute`` run every solution notebook and write the executed copies and
  their HTML to ``build/solved/`` for self-study readers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
RELEASE = ROOT / "notebooks"
BUILD = ROOT / "build" / "solved"

__all__ = [
    "assignments",
    "generate_release",
    "notebook_problems",
    "stale_release",
    "strip_notebook",
]


def assignments(root: Path = ROOT) -> list[str]:
    """Assignment ids (``01_computational_graphs``, ...): the numbered folders of ``solutions/``."""
    return sorted(
        p.name for p in (root / "solutions").iterdir() if p.is_dir() and p.name[:2].isdigit()
    )


def notebook_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What a committed notebook must not carry: outputs, execution counts, widget state."""
    problems = []
    if "widgets" in nb.metadata:
        problems.append("widget state in the notebook metadata")
    for i, cell in enumerate(nb.cells):
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has an execution count")
        if "widgets" in cell.get("metadata", {}):
            problems.append(f"cell {i} has widget state")
    return problems


def strip_notebook(path: Path) -> bool:
    """Strip outputs, execution counts and widget state in place; return True when the file changed."""
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def generate_release(assignment: str, out_dir: Path) -> Path:
    """Run ``nbgrader generate_assignment`` on ``solutions/<assignment>`` in a scratch course.

    Returns the folder holding the generated release of that assignment,
    under ``out_dir``. The scratch course uses nbgrader's default
    configuration, so the result is what any nbgrader makes of our source.
    """
    from .scratch import ScratchCourse

    course = ScratchCourse(out_dir / "course")
    course.add_source(assignment)
    return course.generate(assignment, "--no-db")


def _release_files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    }


def stale_release(assignment: str) -> list[str]:
    """Files of ``notebooks/<assignment>`` that differ from a fresh release (empty when up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _release_files(generate_release(assignment, Path(tmp)))
    committed = _release_files(RELEASE / assignment) if (RELEASE / assignment).is_dir() else {}
    return sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def release() -> None:
    """Regenerate ``notebooks/`` with ``nbgrader generate_assignment`` and the course configuration.

    This also records each assignment's graded cells in the course gradebook,
    which ``nbgrader autograde`` needs.
    """
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = str(ROOT / "autograder")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for assignment in assignments():
        result = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"],
            cwd=ROOT / "autograder", env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"nbgrader generate_assignment {assignment} failed:\n{result.stderr}")
        print(f"released notebooks/{assignment}")


def check() -> int:
    failures = []
    for path in sorted([*SOLUTIONS.rglob("*.ipynb"), *RELEASE.rglob("*.ipynb")]):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for problem in notebook_problems(nbformat.read(path, as_version=4)):
            failures.append(f"{path.relative_to(ROOT)}: {problem} (run: bash course.sh strip)")
    for assignment in assignments():
        for name in stale_release(assignment):
            failures.append(
                f"notebooks/{assignment}/{name} differs from a fresh release of solutions/ "
                "(run: bash course.sh release)"
            )
    for line in failures:
        print(line)
    if not failures:
        print("notebooks/ is up to date and every committed notebook is clean")
    return 1 if failures else 0


def execute() -> None:
    """Execute every solution notebook into build/solved/ (notebook and HTML), for self-study readers."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    BUILD.mkdir(parents=True, exist_ok=True)
    for assignment in assignments():
        for source in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
            nb = nbformat.read(source, as_version=4)
            ExecutePreprocessor(timeout=1800, kernel_name="python3").preprocess(
                nb, {"metadata": {"path": str(BUILD)}}
            )
            nbformat.write(nb, BUILD / source.name)
            html, _ = HTMLExporter().from_notebook_node(nb)
            (BUILD / source.with_suffix(".html").name).write_text(html, encoding="utf-8")
            print(f"executed {source.relative_to(ROOT)} -> build/solved/{source.stem}.html")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m goingdeeper.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["strip", "release", "check", "execute"])
    args = parser.parse_args(argv)
    if args.command == "strip":
        changed = [p for p in sorted(ROOT.glob("*/[0-9]*/*.ipynb")) if strip_notebook(p)]
        for p in changed:
            print(f"stripped {p.relative_to(ROOT)}")
        return 0
    if args.command == "release":
        release()
        return 0
    if args.command == "check":
        return check()
    execute()
    return 0


if __name__ == "__main__":
    sys.exit(main())
