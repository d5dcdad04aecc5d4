"""The course pipeline: strip, release and check the notebooks.

Run as ``python -m instructor.course COMMAND`` (``bash course.sh`` wraps it):

* ``strip``   remove outputs, execution counts and widget state from every
  notebook under ``solutions/`` and ``notebooks/``, and normalise their
  metadata to what JupyterLab writes on opening them (so opening one does not
  mark it modified);
* ``release`` regenerate ``notebooks/`` from ``solutions/`` with nbgrader
  (``notebooks/`` is never edited by hand);
* ``check``   fail when ``notebooks/`` differs in substance from a fresh release
  (sources, cell types and ids, nbgrader's metadata and locks) or a committed
  notebook carries outputs, widget state or incomplete metadata.

The reader's edition (``bash course.sh site``) is :mod:`instructor.reader`; the
student edition (``bash course.sh student-edition``) is :mod:`instructor.editions`.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
RELEASE = ROOT / "notebooks"

__all__ = [
    "assignments",
    "generate_release",
    "kernel_language_info",
    "normalise_notebook",
    "notebook_problems",
    "notebook_substance",
    "release_differences",
    "stale_release",
    "strip_notebook",
    "substance_differences",
]

#: Cell metadata that front ends write while someone works (JupyterLab, the classic Notebook, VS Code):
#: ``strip`` drops it. (An author's collapsed input, ``jupyter.source_hidden``, is kept.)
FRONT_END_CELL_METADATA = ("collapsed", "scrolled", "execution", "trusted", "widgets")
#: Cell metadata that is part of a release, and all that ``check`` compares: nbgrader's, the locks it
#: sets, and tags.
RELEASE_CELL_METADATA = ("nbgrader", "deletable", "editable", "tags")
#: Notebook metadata that the front end rewrites from the kernel it runs (and widget state).
KERNEL_NOTEBOOK_METADATA = ("language_info", "widgets")


def assignments(root: Path = ROOT) -> list[str]:
    """Assignment ids (``01_computational_graphs``, ...): the numbered folders of ``solutions/``."""
    return sorted(
        p.name for p in (root / "solutions").iterdir() if p.is_dir() and p.name[:2].isdigit()
    )


def kernel_language_info() -> dict[str, Any]:
    """The ``language_info`` that the course's kernel (ipykernel, this Python) reports.

    JupyterLab copies it into a notebook's metadata when the kernel starts; a
    notebook that already carries exactly this is not marked modified on opening.
    """
    from ipykernel.ipkernel import IPythonKernel

    return copy.deepcopy(dict(IPythonKernel.language_info))


def _kernelspec() -> dict[str, str]:
    from ipykernel.kernelspec import KERNEL_NAME, get_kernel_dict

    spec = get_kernel_dict()
    return {"display_name": spec["display_name"], "language": spec["language"], "name": KERNEL_NAME}


def notebook_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What a committed notebook must not carry: outputs, execution counts, widget state, incomplete metadata."""
    problems = []
    if "widgets" in nb.metadata:
        problems.append("widget state in the notebook metadata")
    missing = sorted(set(kernel_language_info()) - set(nb.metadata.get("language_info", {})))
    if missing or "kernelspec" not in nb.metadata:
        problems.append(
            f"metadata lacks {', '.join(missing) or 'kernelspec'} (JupyterLab would fill it in and mark the "
            "notebook modified on opening)"
        )
    if nb.nbformat_minor < nbformat.v4.nbformat_minor:
        problems.append(f"nbformat 4.{nb.nbformat_minor} (JupyterLab saves 4.{nbformat.v4.nbformat_minor})")
    for i, cell in enumerate(nb.cells):
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has an execution count")
        if "widgets" in cell.get("metadata", {}):
            problems.append(f"cell {i} has widget state")
    return problems


def normalise_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip a notebook in place to its committed form, and return it.

    Drops outputs, execution counts, widget state and the cell metadata front
    ends write while someone works (:data:`FRONT_END_CELL_METADATA`); brings it
    to nbformat 4.5 (cell ids); writes the kernel's full ``language_info`` and,
    when missing, the kernelspec, which is what JupyterLab writes on opening.
    """
    if nb.nbformat_minor < nbformat.v4.nbformat_minor:
        nb = nbformat.v4.upgrade(nb, from_version=nb.nbformat, from_minor=nb.nbformat_minor)
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = kernel_language_info()
    nb.metadata.setdefault("kernelspec", _kernelspec())
    for cell in nb.cells:
        for key in FRONT_END_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def strip_notebook(path: Path) -> bool:
    """Normalise a notebook file in place (:func:`normalise_notebook`); return True when the file changed."""
    before = path.read_text(encoding="utf-8")
    nb = normalise_notebook(nbformat.reads(before, as_version=4))
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def notebook_substance(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """What a release decides about a notebook, without what opening, running or saving it changes.

    Kept: the nbformat major version, the notebook metadata except
    :data:`KERNEL_NOTEBOOK_METADATA`, and per cell its type, id, source,
    attachments and :data:`RELEASE_CELL_METADATA` (nbgrader's metadata with its
    checksums, and the locks). Left out: outputs, execution counts, widget
    state, ``language_info`` and the cell metadata front ends write.
    """
    return {
        "nbformat": nb.nbformat,
        "metadata": {k: v for k, v in nb.metadata.items() if k not in KERNEL_NOTEBOOK_METADATA},
        "cells": [
            {
                "cell_type": cell.cell_type,
                "id": cell.get("id"),
                "source": cell.source,
                "attachments": cell.get("attachments"),
                "metadata": {k: cell.metadata[k] for k in RELEASE_CELL_METADATA if k in cell.metadata},
            }
            for cell in nb.cells
        ],
    }


def _cell_name(cell: dict[str, Any], index: int) -> str:
    grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
    return f"cell {index} ({grade_id})" if grade_id else f"cell {index}"


def substance_differences(fresh: nbformat.NotebookNode, committed: nbformat.NotebookNode) -> list[str]:
    """How ``committed`` differs from ``fresh`` in substance (:func:`notebook_substance`), in words; empty when equal."""
    a, b = notebook_substance(fresh), notebook_substance(committed)
    if a == b:
        return []
    out = []
    if a["nbformat"] != b["nbformat"]:
        out.append(f"nbformat {b['nbformat']} instead of {a['nbformat']}")
    for key in sorted(a["metadata"].keys() | b["metadata"].keys()):
        if a["metadata"].get(key) != b["metadata"].get(key):
            out.append(f"notebook metadata {key!r} differs")
    if len(a["cells"]) != len(b["cells"]):
        out.append(f"{len(b['cells'])} cells instead of {len(a['cells'])}")
    for i, (x, y) in enumerate(zip(a["cells"], b["cells"])):
        fields = [k for k in ("cell_type", "id", "source", "attachments") if x[k] != y[k]]
        fields += [f"metadata {k!r}" for k in RELEASE_CELL_METADATA if x["metadata"].get(k) != y["metadata"].get(k)]
        if fields:
            out.append(f"{_cell_name(x, i)}: {', '.join(fields)} differ{'s' if len(fields) == 1 else ''}")
    return out


def generate_release(assignment: str, out_dir: Path) -> Path:
    """Run ``nbgrader generate_assignment`` on ``solutions/<assignment>`` in a scratch course.

    Returns the folder holding the generated release of that assignment,
    under ``out_dir``. The scratch course uses nbgrader's default
    configuration, so the result is what any nbgrader makes of our source.
    """
    from instructor.scratch import ScratchCourse

    course = ScratchCourse(out_dir / "course")
    course.add_source(assignment)
    return course.generate(assignment, "--no-db")


def _release_files(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    }


def _file_differences(fresh: Path | None, committed: Path | None) -> list[str]:
    if fresh is None:
        return ["not part of a fresh release"]
    if committed is None:
        return ["missing"]
    if fresh.suffix == ".ipynb":
        return substance_differences(nbformat.read(fresh, as_version=4), nbformat.read(committed, as_version=4))
    return [] if fresh.read_bytes() == committed.read_bytes() else ["content differs"]


def release_differences(assignment: str) -> dict[str, list[str]]:
    """{file of ``notebooks/<assignment>``: how it differs from a fresh release}, for the files that differ.

    Notebooks are compared in substance (:func:`notebook_substance`), so opening,
    running, validating and saving one in JupyterLab does not make it differ;
    other files byte for byte.
    """
    committed_dir = RELEASE / assignment
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _release_files(generate_release(assignment, Path(tmp)))
        committed = _release_files(committed_dir) if committed_dir.is_dir() else {}
        differences = {name: _file_differences(fresh.get(name), committed.get(name))
                       for name in sorted(fresh.keys() | committed.keys())}
    return {name: diff for name, diff in differences.items() if diff}


def stale_release(assignment: str) -> list[str]:
    """Files of ``notebooks/<assignment>`` that differ from a fresh release (empty when up to date)."""
    return sorted(release_differences(assignment))


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
        for name, differences in release_differences(assignment).items():
            shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
            failures.append(
                f"notebooks/{assignment}/{name} differs from a fresh release of solutions/: {shown} "
                "(run: bash course.sh release; it overwrites notebooks/, so keep a copy of answers written there)"
            )
    for line in failures:
        print(line)
    if not failures:
        print("notebooks/ is up to date and every committed notebook is clean")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instructor.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["strip", "release", "check"])
    args = parser.parse_args(argv)
    if args.command == "strip":
        changed = [p for p in sorted(ROOT.glob("*/[0-9]*/*.ipynb")) if strip_notebook(p)]
        for p in changed:
            print(f"stripped {p.relative_to(ROOT)}")
        return 0
    if args.command == "release":
        release()
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
