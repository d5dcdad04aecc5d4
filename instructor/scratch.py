"""A scratch nbgrader course: nbgrader run as an outsider would run it.

``ScratchCourse`` lays out ``source/``, ``release/`` and ``submitted/`` in a
temporary folder, runs nbgrader there with its *default* configuration (or,
with ``course_config=True``, with a copy of the course's own
``autograder/nbgrader_config.py``), and reads scores from the gradebook.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ScratchCourse", "answer_ids", "graded_cells", "replace_cell"]


@dataclass
class ScratchCourse:
    """An nbgrader course in the folder ``root`` (created if missing), holding copies of our assignments."""

    root: Path
    course_config: bool = False

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_dir = self.root / ("autograder" if self.course_config else ".jupyter")
        self.config_dir.mkdir(exist_ok=True)
        if self.course_config:
            shutil.copy(ROOT / "autograder" / "nbgrader_config.py", self.config_dir)
            self.source_dir, self.release_dir = self.root / "solutions", self.root / "notebooks"
            self.submitted_dir = self.root / "autograder" / "submitted"
            self.autograded_dir = self.root / "autograder" / "autograded"
            self.feedback_dir = self.root / "autograder" / "feedback"
            self.db = self.config_dir / "gradebook.db"
        else:
            self.source_dir, self.release_dir = self.root / "source", self.root / "release"
            self.submitted_dir = self.root / "submitted"
            self.autograded_dir = self.root / "autograded"
            self.feedback_dir = self.root / "feedback"
            self.db = self.root / "gradebook.db"

    # -- running nbgrader ---------------------------------------------------------
    def nbgrader(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.pop("JUPYTER_CONFIG_PATH", None)
        env["JUPYTER_CONFIG_DIR"] = str(self.root / ".jupyter-user")  # no user config leaks in
        cwd = self.root
        if self.course_config:
            env["JUPYTER_CONFIG_PATH"] = str(self.config_dir)
            cwd = self.config_dir
        result = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(f"nbgrader {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def add_source(self, assignment: str) -> None:
        """Copy ``solutions/<assignment>`` into this course's source folder."""
        shutil.copytree(ROOT / "solutions" / assignment, self.source_dir / assignment)

    def generate(self, assignment: str, *extra: str) -> Path:
        """``nbgrader generate_assignment``; returns the release folder of ``assignment``."""
        self.nbgrader("generate_assignment", assignment, "--force", *extra)
        return self.release_dir / assignment

    def submit(self, student: str, assignment: str, notebook: nbformat.NotebookNode, name: str) -> Path:
        folder = self.submitted_dir / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        nbformat.write(notebook, path)
        return path

    def autograde(self, assignment: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.nbgrader("autograde", assignment, "--create", *extra)

    # -- reading results ----------------------------------------------------------
    def cell_scores(self, assignment: str, student: str, notebook: str) -> dict[str, tuple[float, float]]:
        """{grade_id: (score, max_score)} for every graded cell of one submitted notebook."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.db}") as gb:
            nb = gb.find_submission_notebook(notebook, assignment, student)
            return {grade.name: (grade.score, grade.max_score) for grade in nb.grades}

    def total(self, assignment: str, student: str) -> tuple[float, float]:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.db}") as gb:
            sub = gb.find_submission(assignment, student)
            return sub.score, sub.max_score

    def autograded_notebook(self, assignment: str, student: str, name: str) -> nbformat.NotebookNode:
        return nbformat.read(self.autograded_dir / student / assignment / name, as_version=4)


def replace_cell(notebook: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    """A copy of ``notebook`` whose cell ``grade_id`` holds ``source`` (the way a student edits it)."""
    copy = nbformat.from_dict(notebook)
    hits = [c for c in copy.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    if len(hits) != 1:
        raise KeyError(f"no single cell with grade_id {grade_id!r}")
    hits[0].source = source
    return copy


def graded_cells(notebook: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {
        c.metadata.nbgrader.grade_id: c
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def answer_ids(notebook: nbformat.NotebookNode) -> list[str]:
    return [
        c.metadata.nbgrader.grade_id
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"
    ]
