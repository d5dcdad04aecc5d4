"""notebooks/ is exactly nbgrader's release of solutions/, and committed notebooks are clean."""

from __future__ import annotations

import shutil

import nbformat
import pytest

from instructor import course
from instructor.course import assignments, notebook_problems, stale_release, strip_notebook


@pytest.mark.parametrize("assignment", assignments())
def test_release_is_fresh(assignment):
    stale = stale_release(assignment)
    assert not stale, f"notebooks/{assignment} is stale in {stale}: run `bash course.sh release` and commit it"


def test_stale_release_is_detected(tmp_path, monkeypatch):
    """The freshness check itself can fail: edit a copy of the release and it must notice."""
    assignment = assignments()[0]
    copy = tmp_path / "notebooks"
    shutil.copytree(course.RELEASE, copy)
    (path,) = (copy / assignment).glob("*.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source += "\n\nEdited by hand."
    nbformat.write(nb, path)
    monkeypatch.setattr(course, "RELEASE", copy)
    assert stale_release(assignment) == [path.name]


def _committed_notebooks(root):
    return sorted(p for d in ("solutions", "notebooks") for p in (root / d).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_committed_notebooks_have_no_outputs_or_widget_state(root):
    notebooks = _committed_notebooks(root)
    assert notebooks
    problems = {str(p.relative_to(root)): notebook_problems(nbformat.read(p, as_version=4)) for p in notebooks}
    assert not any(problems.values()), f"run `bash course.sh strip`: {problems}"


def test_release_has_no_solutions_or_hidden_tests(root):
    for path in (root / "notebooks").rglob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "load_reference"):
            assert marker not in text, f"{path.relative_to(root)} contains {marker!r}"


def test_every_assignment_is_released(root):
    for assignment in assignments():
        sources = sorted(p.name for p in (root / "solutions" / assignment).glob("*.ipynb"))
        released = sorted(p.name for p in (root / "notebooks" / assignment).glob("*.ipynb"))
        assert sources and sources == released


def test_strip_removes_outputs_and_widget_state(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert notebook_problems(nbformat.read(path, as_version=4))
    assert strip_notebook(path) is True
    assert notebook_problems(nbformat.read(path, as_version=4)) == []
    assert strip_notebook(path) is False


def test_validate_shows_every_word_of_a_failed_check(root, tmp_path):
    """nbgrader's Validate (the button runs `nbgrader validate`) cuts each line of an error at 87 characters: a
    failed check's message is wrapped so that it arrives whole, after "✗ Not yet:", with no traceback."""
    import os
    import subprocess
    import sys

    shutil.copy(root / "notebooks" / "01_computational_graphs" / "01_computational_graphs.ipynb", tmp_path / "n.ipynb")
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "nbgrader", "validate", "n.ipynb"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600).stdout
    errors = [block.split("\n\n=====")[0] for block in out.split("The error was:")[1:]]
    assert errors and all("Not yet:" in e for e in errors), out[:3000]
    cut = [line for e in errors for line in e.splitlines() if line.endswith("...")]
    assert not cut, f"Validate cut these lines of a check's message: {cut[:3]}"
    assert "Traceback" not in "".join(errors), out[:3000]
    assert "not implemented yet: replace `raise NotImplementedError()` with your code." in " ".join(
        " ".join(line.strip() for line in e.splitlines()) for e in errors)


def test_a_failed_check_is_wrapped_to_the_width_validate_keeps():
    from goingdeeper import MESSAGE_WIDTH, failure_lines

    lines = failure_lines(AssertionError("word " * 60 + "the_end"), None)
    assert lines[0].startswith("\x1b[31m\x1b[1m\u2717 Not yet:\x1b[0m word")
    plain = [line.replace("\x1b[31m\x1b[1m", "").replace("\x1b[0m", "") for line in lines]
    assert max(map(len, plain)) <= MESSAGE_WIDTH and plain[-1].endswith("the_end")
