"""The course as people meet it: the student edition, the reader's site, and notebooks that open unmodified."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from labserver import TOKEN, course_venv, get, lab_server, venv_is_current

from instructor import course
from instructor.course import (
    assignments,
    kernel_language_info,
    notebook_problems,
    stale_release,
    strip_notebook,
    substance_differences,
)
from instructor.editions import (
    EDITION_NAME,
    INSTRUCTOR_MARKERS,
    INSTRUCTOR_MODULES,
    ZIP_TIMESTAMP,
    zip_timestamp,
    build_student_edition,
    instructor_material,
)
from instructor.reader import build_site, reader_notebook
from instructor.scratch import ROOT

# -- the student edition ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    folder, _ = build_student_edition(tmp_path_factory.mktemp("edition"), check_release=False)
    return folder


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_student_edition_holds_no_instructor_material(edition):
    files = _files(edition)
    for name, path in files.items():
        top = name.split("/")[0]
        assert top not in ("autograder", "solutions", "tests", "benchmarks", "editions"), name
        assert not (top == "goingdeeper" and name.count("/") == 1 and Path(name).name in INSTRUCTOR_MODULES), name
        content = path.read_bytes()
        for marker in INSTRUCTOR_MARKERS:
            assert marker.encode() not in content, f"{name} contains {marker!r}"
    assert "goingdeeper/checks.py" in files and "goingdeeper/grading.py" not in files


def test_student_edition_ships_the_release_byte_for_byte(edition, root):
    shipped = {n: p for n, p in _files(edition).items() if n.startswith("notebooks/")}
    released = {p.relative_to(root).as_posix(): p for p in sorted((root / "notebooks").rglob("*"))
                if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    assert shipped.keys() == released.keys()
    for name in shipped:
        assert shipped[name].read_bytes() == released[name].read_bytes(), name
    for a in assignments():
        assert f"notebooks/{a}/{a}.ipynb" in shipped


def test_student_edition_has_the_set_up_files_and_a_students_readme(edition, root):
    files = _files(edition)
    for name in ("course.sh", "requirements.txt", "environment.yml", "pyproject.toml", "data/README.md",
                 "jupyter-config/student/labconfig/page_config.json", ".student-edition", "README.md"):
        assert name in files, name
    for name in ("course.sh", "requirements.txt", "environment.yml", "pyproject.toml"):
        assert files[name].read_bytes() == (root / name).read_bytes(), name
    assert os.access(files["course.sh"], os.X_OK)
    readme = files["README.md"].read_text()
    for words in ("bash course.sh lab", "Python 3.11", "in order", "✓", "CheckFailed", "locked", "hidden tests",
                  "stderr", "earns nothing", "Validate", "## Submit", "not implemented yet"):
        assert words in readme, words
    for a in assignments():
        assert f"notebooks/{a}/{a}.ipynb" in readme
    assert "bash course.sh test" not in readme and "solutions/" not in readme


def test_student_edition_zip_is_the_folder_and_deterministic(tmp_path):
    first = build_student_edition(tmp_path / "a", check_release=False)
    second = build_student_edition(tmp_path / "b", check_release=False)
    assert first[1].read_bytes() == second[1].read_bytes(), "two builds of the same sources made different zips"
    with zipfile.ZipFile(first[1]) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert all(i.date_time == zip_timestamp() for i in infos)
        assert zip_timestamp()[0] >= 2025, "a git checkout dates the entries by its last commit, not 1980"
        assert {n.removeprefix(f"{EDITION_NAME}/") for n in names} == set(_files(first[0]))
        for name in names:
            assert archive.read(name) == (first[0].parent / name).read_bytes(), name
        mode = archive.getinfo(f"{EDITION_NAME}/course.sh").external_attr >> 16
        assert mode & 0o111, "course.sh lost its executable bit in the zip"


def test_zip_timestamp_follows_source_date_epoch_and_falls_back_to_1980(monkeypatch, tmp_path):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225601")  # 2026-01-01 00:00:01 UTC
    assert zip_timestamp() == (2026, 1, 1, 0, 0, 0)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "not a number")
    assert zip_timestamp(tmp_path) == ZIP_TIMESTAMP  # not a date, and no git history in tmp_path
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert zip_timestamp(tmp_path) == ZIP_TIMESTAMP


def test_student_edition_course_sh_offers_only_the_students_commands(edition):
    def run(*args):
        return subprocess.run(["bash", str(edition / "course.sh"), *args], capture_output=True, text=True, timeout=60)

    assert subprocess.run(["bash", "-n", str(edition / "course.sh")]).returncode == 0
    help_ = run("help")
    assert help_.returncode == 0 and "bash course.sh lab" in help_.stdout and "bash course.sh setup" in help_.stdout
    for command in ("test", "grade", "release", "nbgrader", "site", "student-edition", "lab --instructor"):
        assert f"bash course.sh {command}" not in help_.stdout, command
    assert "student edition" in help_.stdout
    for args in (["test"], ["grade", "all"], ["release"], ["lab", "--instructor"]):
        out = run(*args)
        assert out.returncode != 0 and "is for instructors" in out.stderr, (args, out.stderr)


_WITHOUT_EDITABLE_INSTALLS = (
    # The course's own goingdeeper is installed in editable mode; drop its finder so that a module
    # missing from the edition cannot be found in the repository instead.
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
)


def test_student_edition_package_imports_and_runs_every_set_up_cell(edition, tmp_path):
    setups = []
    for path in sorted((edition / "notebooks").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        setups += [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    assert len(setups) == len(assignments()), "every notebook opens with a cell whose grade id is 'setup'"
    modules = sorted(p.stem for p in (edition / "goingdeeper").glob("*.py") if p.stem != "__init__")
    script = _WITHOUT_EDITABLE_INSTALLS + (
        "import importlib, pathlib, goingdeeper\n"
        f"assert pathlib.Path(goingdeeper.__file__).is_relative_to({str(edition)!r}), goingdeeper.__file__\n"
        f"for name in {modules!r}: importlib.import_module('goingdeeper.' + name)\n"
        "import matplotlib; matplotlib.use('Agg')\n"
        + "".join(f"exec({source!r}, {{}})\n" for source in setups)
        + "for name in ('grading', 'course', 'scratch'):\n"
        "    try: importlib.import_module('goingdeeper.' + name)\n"
        "    except ImportError: pass\n"
        "    else: raise AssertionError(f'goingdeeper.{name} is importable in the edition')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(edition), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.fixture(scope="module")
def student_venv(edition, tmp_path_factory) -> Path:
    """A fresh virtual environment with the edition installed as its course.sh installs it (``pip install --no-deps
    -e``). Its third-party libraries (torch, numpy, ...) come from this venv's site-packages through a path
    line, which adds the folder but runs none of its .pth files: the repository's editable installs of
    goingdeeper and instructor are not there. Returns its python."""
    import sysconfig

    venv = tmp_path_factory.mktemp("student venv") / "venv"
    # No pip or setuptools of its own: pip and the build backend come from the course's venv (the path line).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                   timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "course_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
                          str(edition)], capture_output=True, text=True, timeout=600, cwd=venv.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return python


def test_in_a_fresh_venv_the_edition_installs_and_holds_no_grader_or_instructor_code(student_venv, edition, tmp_path):
    script = (
        "import importlib, pathlib, goingdeeper\n"
        f"assert pathlib.Path(goingdeeper.__file__).is_relative_to({str(edition)!r}), goingdeeper.__file__\n"
        "found = []\n"
        "for name in ('instructor', 'autograder', 'goingdeeper.grading', 'instructor.train_full'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    found.append(name)\n"
        "assert not found, f'importable in the student venv: {found}'\n"
        "print('ok')\n"
    )
    out = subprocess.run([str(student_venv), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def _in_edition(student_venv: Path, edition: Path, tmp_path: Path, script: str, data: object) -> object:
    """Run ``script`` in the student's fresh venv (the edition installed there, not the repository's package) with
    ``data`` as DATA; return its RESULT."""
    (tmp_path / "data.json").write_text(json.dumps(data))
    code = ("import json, pathlib, sys, goingdeeper\n"
            f"assert pathlib.Path(goingdeeper.__file__).is_relative_to({str(edition)!r}), goingdeeper.__file__\n"
            f"DATA = json.loads(pathlib.Path({str(tmp_path / 'data.json')!r}).read_text())\n"
            + script + "\nprint(json.dumps(RESULT))\n")
    out = subprocess.run([str(student_venv), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_student_edition_package_holds_no_reference_implementation(student_venv, edition, tmp_path):
    """No function, class or run of statements of the installed package is a reference answer with its names
    changed (the own-work reader's likeness, read by the edition's own code)."""
    references = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "autograder" / "reference").glob("*.py"))}
    script = (
        "from goingdeeper import ownwork\n"
        "pieces = ownwork.package_pieces()\n"
        "from goingdeeper import cifar, train\n"
        "RESULT = sorted({pieces[text] for source in DATA.values() for text, _, _ in "
        "ownwork._pieces(ownwork._parse(source)) if text in pieces})\n"
        "RESULT += [f'{m.__name__}.{n}' for m in (cifar, train) for n in ('augment', 'train_step', 'evaluate', "
        "'step_lr', 'lr_at', 'channel_stats') if hasattr(m, n)]\n"
    )
    found = _in_edition(student_venv, edition, tmp_path, script, references)
    assert found == [], f"the student's package holds reference code: {found}"


def test_in_the_student_edition_an_answer_key_of_installed_code_fails_every_test(student_venv, edition, tmp_path):
    """Every answer made only of calls into what the edition installs (tests/answer_key.py) breaks the own-work
    rule in every test cell, as the edition's own package reads it (what Validate and plain nbgrader run)."""
    from answer_key import answer_key

    from goingdeeper import ownwork
    from instructor.scratch import graded_cells

    cases = []
    for a in assignments():
        key = answer_key(a, nbformat.read(ROOT / "solutions" / a / f"{a}.ipynb", as_version=4))
        sources = [c.source for c in key.cells if c.cell_type == "code" and not ownwork._is_test_cell(c.source)]
        for gid, cell in graded_cells(nbformat.read(edition / "notebooks" / a / f"{a}.ipynb", as_version=4)).items():
            cases.append({"test": f"{a}:{gid}", "sources": sources, "call": cell.source})
    script = (
        "import ast\n"
        "from goingdeeper import ownwork\n"
        "RESULT = []\n"
        "for case in DATA:\n"
        "    calls = [n.value for n in ast.parse(case['call']).body if isinstance(n, ast.Expr) and\n"
        "             isinstance(n.value, ast.Call) and getattr(n.value.func, 'id', '') == 'own_work']\n"
        "    if not calls:\n"
        "        RESULT.append([case['test'], 'no own_work call']); continue\n"
        "    call = calls[0]\n"
        "    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}\n"
        "    allow = [a if a.startswith('goingdeeper') else 'goingdeeper.' + a for a in kw.get('allow', ())]\n"
        "    breaches, _, _ = ownwork.find_breaches(case['sources'], [ast.literal_eval(x) for x in call.args],\n"
        "                                           torch=kw.get('torch', True), allow=allow)\n"
        "    if not breaches:\n"
        "        RESULT.append([case['test'], 'no breach'])\n"
    )
    unbroken = _in_edition(student_venv, edition, tmp_path, script, cases)
    assert len(cases) >= 40 and not unbroken, unbroken


def test_student_edition_package_builds_as_a_wheel_without_instructor_modules(edition, tmp_path):
    build = tmp_path / "src"
    shutil.copytree(edition, build)  # setuptools writes its egg-info beside the sources
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "-w", str(tmp_path / "dist"), str(build)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("goingdeeper-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n for n in archive.namelist() if n.startswith("goingdeeper/")}
    assert packaged == {n for n in _files(edition) if n.startswith("goingdeeper/")}


def test_student_edition_lab_serves_the_notebooks(edition):
    reason = venv_is_current(edition)
    if reason:
        pytest.skip(reason)
    # The course's environment (never one of the edition's own), with the edition's package first on the path.
    with lab_server(edition, env={"PYTHONPATH": str(edition), "GOINGDEEPER_VENV": str(course_venv())}) as base:
        _, body = get(f"{base}/api/contents?token={TOKEN}")
        assert {item["name"] for item in json.loads(body)["content"]} == set(assignments())
        a = assignments()[0]
        status, body = get(f"{base}/api/contents/{a}/{a}.ipynb?token={TOKEN}")
        assert status == 200 and json.loads(body)["content"]["cells"]


def test_instructor_material_is_named_and_refused(tmp_path):
    assert instructor_material({"goingdeeper/checks.py": b"def f():\n    pass\n"}) == []
    problems = instructor_material({
        "goingdeeper/helpers.py": b"x = 1  ### BEGIN SOLUTION",
        "goingdeeper/grading.py": b"",
        "autograder/reference/x.py": b"",
        "notebooks/a/a.ipynb": b'"from goingdeeper.grading import load_reference"',
    })
    assert len(problems) == 4 and all(any(name in p for p in problems) for name in
                                      ("helpers.py", "grading.py", "autograder/", "a.ipynb"))


def test_student_edition_refuses_a_release_with_outputs(tmp_path, monkeypatch):
    copy = tmp_path / "course"  # a course of one assignment
    a = assignments()[0]
    for name in ("goingdeeper", "jupyter-config", "editions", "data"):
        shutil.copytree(course.ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("solutions", "notebooks"):
        shutil.copytree(course.ROOT / name / a, copy / name / a)
    for name in ("course.sh", "requirements.txt", "environment.yml", "pyproject.toml"):
        shutil.copy(course.ROOT / name, copy / name)
    path = copy / "notebooks" / a / f"{a}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nbformat.write(nb, path)
    monkeypatch.setattr(course, "RELEASE", copy / "notebooks")
    monkeypatch.setattr(course, "SOLUTIONS", copy / "solutions")
    with pytest.raises(SystemExit, match="has outputs"):
        build_student_edition(tmp_path / "out", copy)
    assert not (tmp_path / "out").exists()


# -- notebooks open unmodified; check compares what matters ---------------------------------------


def _as_jupyterlab_saves_it(nb: nbformat.NotebookNode, *, collapse: bool = True) -> nbformat.NotebookNode:
    """What opening, running, validating and saving in JupyterLab does to a notebook (without answers);
    ``collapse``: the student also collapsed and expanded some inputs."""
    nb = nbformat.from_dict(nb)
    nb.metadata["language_info"] = {**kernel_language_info(), "version": "3.11.99"}  # another Python patch
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for i, cell in enumerate(nb.cells):
        if collapse:
            cell.metadata["jupyter"] = {"source_hidden": False}
        cell.metadata["scrolled"] = True
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        if cell.cell_type == "code":
            cell.execution_count = i
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓\n")]
    return nb


def test_committed_notebooks_carry_what_jupyterlab_writes_on_opening(root):
    want = kernel_language_info()
    for path in sorted([*(root / "solutions").glob("*/*.ipynb"), *(root / "notebooks").glob("*/*.ipynb")]):
        nb = nbformat.read(path, as_version=4)
        assert set(nb.metadata.language_info) == set(want), f"{path}: run `bash course.sh strip`"
        assert {k: v for k, v in nb.metadata.language_info.items() if k != "version"} == \
            {k: v for k, v in want.items() if k != "version"}, path
        assert nb.nbformat == 4 and nb.nbformat_minor == nbformat.v4.nbformat_minor, path
        assert "kernelspec" in nb.metadata, path


def test_a_release_opened_run_and_saved_in_jupyterlab_is_still_fresh(tmp_path, monkeypatch):
    a = assignments()[0]
    copy = tmp_path / "notebooks"
    shutil.copytree(course.RELEASE / a, copy / a)
    (path,) = (copy / a).glob("*.ipynb")
    nbformat.write(_as_jupyterlab_saves_it(nbformat.read(path, as_version=4)), path)
    monkeypatch.setattr(course, "RELEASE", copy)
    assert stale_release(a) == [], "metadata, outputs and widget state must not make a release stale"
    # strip brings it back to the committed form
    original = nbformat.read(course.ROOT / "notebooks" / a / path.name, as_version=4)
    nbformat.write(_as_jupyterlab_saves_it(original, collapse=False), path)
    assert strip_notebook(path) is True
    assert notebook_problems(nbformat.read(path, as_version=4)) == []
    committed = nbformat.read(course.ROOT / "notebooks" / a / path.name, as_version=4)
    stripped = nbformat.read(path, as_version=4)
    assert stripped.metadata.language_info == kernel_language_info()
    assert substance_differences(committed, stripped) == []
    if committed.metadata.language_info == kernel_language_info():
        assert path.read_bytes() == (course.ROOT / "notebooks" / a / path.name).read_bytes()


def test_check_names_the_cells_that_differ_in_substance():
    a = assignments()[0]
    nb = nbformat.read(course.ROOT / "notebooks" / a / f"{a}.ipynb", as_version=4)
    edited = nbformat.from_dict(nb)
    i, cell = next((i, c) for i, c in enumerate(edited.cells) if c.metadata.get("nbgrader", {}).get("locked"))
    cell.metadata.nbgrader["locked"] = False
    j, answer = next((j, c) for j, c in enumerate(edited.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source = "x = 1"
    differences = substance_differences(nb, edited)
    grade_id = cell.metadata.nbgrader.grade_id
    assert f"cell {i} ({grade_id}): metadata 'nbgrader' differs" in differences
    assert any(d.startswith(f"cell {j} (") and "source" in d for d in differences)
    assert substance_differences(nb, _as_jupyterlab_saves_it(nb)) == []


def test_strip_upgrades_old_notebooks_and_fills_in_the_kernel_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hi"), nbformat.v4.new_code_cell("1")])
    nb.nbformat_minor = 4
    for cell in nb.cells:
        cell.pop("id", None)
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(nb))
    assert strip_notebook(path)
    fixed = nbformat.read(path, as_version=4)
    assert fixed.nbformat_minor == nbformat.v4.nbformat_minor and all("id" in c for c in fixed.cells)
    assert fixed.metadata.language_info == kernel_language_info() and fixed.metadata.kernelspec.name == "python3"
    assert notebook_problems(fixed) == []
    assert strip_notebook(path) is False


# -- the reader's site ------------------------------------------------------------------------------


def test_reader_notebook_keeps_solutions_and_drops_markers_hidden_tests_and_nbgrader_metadata():
    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "grade": False, "solution": False, "locked": False, **kw}}

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                                  metadata=meta(solution=True, grade_id="f")),
        nbformat.v4.new_code_cell('"""f doubles."""\nassert f(1) == 2\n### BEGIN HIDDEN TESTS\n'
                                  'ref = load_reference("x")\n### END HIDDEN TESTS',
                                  metadata={**meta(grade=True, grade_id="test_f", points=1), "deletable": False}),
        nbformat.v4.new_code_cell("### BEGIN HIDDEN TESTS\nassert f(3) == 6\n### END HIDDEN TESTS",
                                  metadata=meta(grade=True, grade_id="test_hidden", points=1)),
        nbformat.v4.new_markdown_cell("Done."),
    ])
    reader = reader_notebook(nb)
    assert [c.source for c in reader.cells] == ["def f(x):\n    return 2 * x", '"""f doubles."""\nassert f(1) == 2',
                                                "Done."]
    assert all("nbgrader" not in c.metadata and "deletable" not in c.metadata for c in reader.cells)
    assert "BEGIN" in nb.cells[0].source, "the source notebook is left as it was"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The reader's site in fast mode, for the first two notebooks (the second has an explorer)."""
    out = tmp_path_factory.mktemp("site")
    build_site(out, only=assignments()[:2], fast=True, timeout=600, log=lambda *_: None)
    return out


def test_site_pages_work_offline(site):
    pages = sorted(site.glob("*.html"))
    assert [p.name for p in pages] == sorted(["index.html", *(f"{a}.html" for a in assignments()[:2])])
    assert (site / "mathjax" / "MathJax.js").is_file()
    assert (site / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert list((site / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web").rglob("*.woff")), "no web fonts for the math"
    for page in pages:
        html = page.read_text()
        for cdn in ("cdn.", "unpkg", "jsdelivr", "cdnjs", "googleapis"):
            assert cdn not in html, f"{page.name} refers to {cdn}"
        for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
            for url in re.findall(rf"<{tag}\b[^>]*\b{attr}=[\"']([^\"']+)", html):
                assert "://" not in url and not url.startswith("//"), f"{page.name}: <{tag} {attr}={url[:80]}>"
        assert 'src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"' in html, page.name


def test_site_pages_hold_the_solved_series_without_instructor_material(site):
    for a in assignments()[:2]:
        html = (site / f"{a}.html").read_text()
        for marker in (*INSTRUCTOR_MARKERS, "checksum", '"nbgrader"'):
            assert marker not in html, f"{a}.html contains {marker!r}"
        assert "Built in fast mode" in html
        assert re.search(r'<img\b[^>]*\bsrc="data:image/png;base64,', html), f"{a}.html has no figure"
        assert "widget-view+json" not in html and "Traceback" not in html
        assert "✓" in html, "the test cells' outputs are shown"


def test_site_explorers_are_static_figures(site):
    """A cell that calls an explorer shows a figure (GOINGDEEPER_STATIC=1), not a widget."""
    calls = 0
    for a in assignments()[:2]:
        html = (site / f"{a}.html").read_text()
        for call in re.finditer(r'<span class="n">\w+_explorer</span>', html):  # in a code cell's input
            after = html[call.end():]
            cell = after[: after.find("jp-InputArea-editor")]  # up to the next cell's input
            assert re.search(r'<img\b[^>]*\bsrc="data:image/png;base64,', cell), f"{a}: an explorer shows no figure"
            calls += 1
    if not calls:
        pytest.skip("no explorer in the notebooks this fast build covers")


def test_site_index_lists_every_page_in_lecture_order(site):
    html = (site / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+\.html)"', html)
    assert links == [f"{a}.html" for a in assignments()[:2]]
    assert "Built in fast mode" in html and 'src="mathjax/MathJax.js' in html
    for a in assignments()[:2]:
        title = nbformat.read(course.ROOT / "solutions" / a / f"{a}.ipynb", as_version=4).cells[0].source
        assert title.splitlines()[0].lstrip("# ").split("·")[-1].strip() in html


def _tiny_solutions(folder: Path) -> Path:
    """Three one-cell assignments; the second raises in its second code cell."""
    cells = {
        "01_first": ["print('first page ran')"],
        "02_broken": ["x = 1", "raise ValueError('the data file is missing')"],
        "03_third": ["print('third page ran')"],
    }
    for assignment, sources in cells.items():
        (folder / assignment).mkdir(parents=True)
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# Notebook {assignment[:2]}\n\nWhat {assignment} is about."),
            *(nbformat.v4.new_code_cell(source) for source in sources),
        ])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / assignment / f"{assignment}.ipynb")
    return folder


def test_site_builds_every_page_it_can_when_a_notebook_fails(root, tmp_path):
    """`bash course.sh site`: one failing notebook costs its own page only; the index says so; the command fails."""
    solutions = _tiny_solutions(tmp_path / "solutions")
    out = tmp_path / "site"
    (out).mkdir()
    (out / "02_broken.html").write_text("a page from an earlier build")
    run = subprocess.run(["bash", str(root / "course.sh"), "site", str(out), "--fast", "--timeout", "120",
                          "--solutions", str(solutions)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert sorted(p.name for p in out.glob("*.html")) == ["01_first.html", "03_third.html", "index.html"]
    assert "first page ran" in (out / "01_first.html").read_text()
    third = (out / "03_third.html").read_text()
    assert "third page ran" in third and '<a href="01_first.html">' in third, "the neighbours skip the failed page"
    index = (out / "index.html").read_text()
    assert re.findall(r'<a href="([^"]+\.html)"', index) == ["01_first.html", "03_third.html"]
    assert "Notebook 02" in index and "Not built" in index and "ValueError: the data file is missing" in index
    # At the end, one line per failed notebook: which one, and why (kernels may have warned before).
    lines = run.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("course.sh site: "))
    assert "1 of 3 notebooks failed" in lines[start], run.stderr
    assert lines[start + 1:] == ["  02_broken: ValueError: the data file is missing (code cell 2)"], run.stderr


def test_site_names_the_solutions_folder_and_survives_any_error_of_one_notebook(root, tmp_path, monkeypatch):
    """A missing --solutions folder: one line, status 2. Any error of one notebook (reading its title, running it,
    an empty message) costs that page only; messages name the folder actually used. No kernel runs here."""
    from instructor import reader

    missing = tmp_path / "no such folder"
    run = subprocess.run([sys.executable, "-m", "instructor.reader", str(tmp_path / "site"),
                          "--solutions", str(missing)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [f"course.sh site: --solutions {missing}: no such folder"], run.stderr
    assert not (tmp_path / "site").exists()

    solutions = _tiny_solutions(tmp_path / "my solutions")
    info = reader.notebook_info

    def notebook_info(path):
        if path.parent.name == "01_first":
            raise KeyError("cells")
        return info(path)

    def execute_notebook(nb, workdir, *, name, **kwargs):
        if workdir.name == "02_broken":
            raise RuntimeError()  # no message at all
        assert name == f"{solutions}/{workdir.name}", name
        return nb

    monkeypatch.setattr(reader, "notebook_info", notebook_info)
    monkeypatch.setattr(reader, "execute_notebook", execute_notebook)
    (solutions / "04_empty").mkdir()
    with pytest.raises(reader.SiteIncomplete) as failure:
        reader.build_site(tmp_path / "site", solutions=solutions, log=lambda *a: None)
    assert failure.value.failed == {
        "01_first": "cannot be read: KeyError: 'cells'",
        "02_broken": "RuntimeError",
        "04_empty": f"{solutions}/04_empty should hold one notebook, not 0",
    }
    assert sorted(p.name for p in (tmp_path / "site").glob("*.html")) == ["03_third.html", "index.html"]


def test_explorers_draw_static_figures_when_asked(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from goingdeeper import bn, fc

    monkeypatch.setenv("GOINGDEEPER_STATIC", "1")
    calls = []

    def measure(**kwargs):
        calls.append(kwargs)
        return [1.0] * kwargs["depth"]

    fig = fc.gradient_flow_explorer(measure)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 and len(calls) == 9
    assert {c["depth"] for c in calls} == {10, 30, 100}
    fig = bn.training_explorer(steps=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert all(len(ax.get_lines()) >= 2 for ax in fig.axes), "each panel shows the runs with and without BN"
