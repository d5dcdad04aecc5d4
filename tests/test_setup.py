"""Set-up: pins agree everywhere, course.sh behaves, and JupyterLab opens the series with its extensions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Iterator

import pytest
from labserver import TOKEN, get as _get, lab_server

from instructor.course import assignments


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_environment_yml_has_the_same_pins_as_requirements(root):
    req = _pins((root / "requirements.txt").read_text())
    env = _pins((root / "environment.yml").read_text())
    assert req == env
    assert req["torch"] == "2.13.0"
    assert 'python=3.11' in (root / "environment.yml").read_text()


def test_pyproject_pins_torch_exactly(root):
    assert '"torch==2.13.0"' in (root / "pyproject.toml").read_text()


def test_installed_versions_match_the_pins(root):
    from importlib.metadata import version

    for name, pinned in _pins((root / "requirements.txt").read_text()).items():
        assert version(name).split("+")[0] == pinned, f"{name} {version(name)} installed, {pinned} pinned"


def test_course_sh_help_and_unknown_command(root):
    out = subprocess.run(["bash", str(root / "course.sh"), "help"], capture_output=True, text=True)
    assert out.returncode == 0 and "bash course.sh lab" in out.stdout and "bash course.sh test" in out.stdout
    for command in ("lab --instructor", "site [DIR]", "student-edition [DIR]", "grade A|all"):
        assert f"bash course.sh {command}" in out.stdout, command
    gone = subprocess.run(["bash", str(root / "course.sh"), "execute"], capture_output=True, text=True)
    assert gone.returncode != 0 and "bash course.sh site" in gone.stderr
    bad = subprocess.run(["bash", str(root / "course.sh"), "labb"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown command 'labb'" in bad.stderr and "bash course.sh help" in bad.stderr


def _setup(root: Path, venv: Path, timeout: float = 900, **env_vars: str) -> subprocess.CompletedProcess:
    """``GOINGDEEPER_VENV=venv bash course.sh setup``, as from a plain shell (``env_vars`` added)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(["bash", str(root / "course.sh"), "setup"], capture_output=True, text=True,
                          env={**env, **env_vars, "GOINGDEEPER_VENV": str(venv)}, timeout=timeout)


def _offline(tmp_path: Path) -> dict[str, str]:
    """pip's own settings for a package index with nothing in it: setup stops at its first install, in seconds."""
    (tmp_path / "no wheels").mkdir(exist_ok=True)
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "no wheels")}


def _without_pip(venv: Path) -> Path:
    """A virtual environment without pip (as `uv venv` makes one); returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    return site


def test_setup_rebuilds_a_venv_an_interrupted_setup_left_without_pip(root, tmp_path):
    """A setup killed during `python -m venv` leaves course.sh's marker and a venv without pip: the next
    setup says so and rebuilds it.

    A real installation (about a minute from a local wheel cache), into a path with spaces.
    """
    venv = tmp_path / "a venv with spaces"
    _without_pip(venv)
    (venv / ".goingdeeper-created").touch()  # written before `python -m venv` runs
    (venv / "left-over").write_text("from the interrupted setup")
    try:
        out = _setup(root, venv)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (f"course.sh: the virtual environment {venv} is incomplete (an earlier setup was interrupted?); "
                "rebuilding it") in out.stdout, out.stdout
        assert not (venv / "left-over").exists(), "the venv was not rebuilt"
        python = venv / "bin" / "python"
        check = subprocess.run([str(python), "-c", "import torch, nbgrader, goingdeeper; print(torch.__version__)"],
                               capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.startswith("2.13.0"), check.stdout + check.stderr
        assert subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode == 0
        stamp = (venv / ".goingdeeper-installed").read_text()
        assert stamp == subprocess.run("cat requirements.txt pyproject.toml | cksum", shell=True, cwd=root,
                                       capture_output=True, text=True).stdout
        again = _setup(root, venv, timeout=60)  # complete now: reused as it is
        assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # 1.6 GB


def test_setup_rebuilds_a_folder_holding_only_its_marker(root, tmp_path):
    """Interrupted before `python -m venv` wrote pyvenv.cfg: the marker (and a partial bin/) is course.sh's own."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".goingdeeper-created").touch()
    out = _setup(root, venv, timeout=300, **_offline(tmp_path))
    assert "is incomplete (an earlier setup was interrupted?); rebuilding it" in out.stdout, out.stdout + out.stderr
    assert "installing the pinned packages" in out.stdout  # then pip finds no packages (offline): stop there
    assert out.returncode != 0 and not (venv / ".goingdeeper-installed").exists()
    assert (venv / "pyvenv.cfg").is_file() and (venv / ".goingdeeper-created").is_file()
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import pip"]).returncode == 0


def test_setup_gives_someone_elses_venv_pip_and_deletes_nothing(root, tmp_path):
    """A GOINGDEEPER_VENV that course.sh did not make and that has no pip gets pip from ensurepip; not cleared."""
    venv = tmp_path / "my venv"
    site = _without_pip(venv)
    (site / "mine.py").write_text("precious = True")
    out = _setup(root, venv, timeout=300, **_offline(tmp_path))
    assert (f"course.sh: the virtual environment {venv} has no pip; installing it with ensurepip "
            "(nothing else in it changes)") in out.stdout, out.stdout + out.stderr
    assert "rebuilding" not in out.stdout and "installing the pinned packages" in out.stdout, out.stdout
    assert out.returncode != 0  # pip finds no packages (offline): the test stops there
    assert (site / "mine.py").read_text() == "precious = True", "the venv was cleared"
    assert not (venv / ".goingdeeper-created").exists()
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import pip, mine"], cwd=tmp_path).returncode == 0


def test_setup_refuses_someone_elses_venv_whose_python_does_not_run(root, tmp_path):
    venv = tmp_path / "my venv"
    site = _without_pip(venv)
    (site / "mine.py").write_text("precious = True")
    python = venv / "bin" / "python"
    python.unlink()
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    out = _setup(root, venv, timeout=60)
    assert out.returncode != 0
    assert (f"the virtual environment {venv} (course.sh did not make it) its python does not run; "
            "course.sh will not rebuild it") in out.stderr, out.stderr
    assert "creating" not in out.stdout and "installing" not in out.stdout, out.stdout
    assert (site / "mine.py").read_text() == "precious = True" and (venv / "pyvenv.cfg").is_file()


@pytest.mark.parametrize("what", ["folder", "file"])
def test_setup_refuses_a_venv_setting_that_is_not_a_venv_and_deletes_nothing(root, tmp_path, what):
    """GOINGDEEPER_VENV at a folder of other things (or a file) is refused with a clear message, left as it was."""
    target = tmp_path / "my notes"
    if what == "folder":
        target.mkdir()
        (target / "thesis.tex").write_text("precious")
    else:
        target.write_text("precious")
    out = _setup(root, target, timeout=60)
    assert out.returncode != 0
    assert f"GOINGDEEPER_VENV points at '{target}', which is not a virtual environment" in out.stderr, out.stderr
    assert "deletes nothing that is not a virtual environment" in out.stderr
    assert "creating" not in out.stdout and "installing" not in out.stdout, out.stdout
    assert (target / "thesis.tex" if what == "folder" else target).read_text() == "precious"


def test_ci_runs_the_readme_test_command(root):
    assert "bash course.sh test" in (root / ".ci" / "run").read_text()
    readme = (root / "README.md").read_text()
    assert "bash course.sh test" in readme and "bash course.sh lab" in readme


def _jupyter(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)


def test_nbgrader_and_widgets_extensions_are_enabled():
    labext = _jupyter("labextension", "list")
    for name in ("@jupyter/nbgrader", "@jupyter-widgets/jupyterlab-manager"):
        assert re.search(re.escape(name) + r" v\S+ enabled OK", labext), labext
    server = _jupyter("server", "extension", "list")
    for name in ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.validate_assignment"):
        assert re.search(re.escape(name) + r" enabled", server), server


@contextlib.contextmanager
def _lab(root: Path, *args: str) -> Iterator[tuple[str, str]]:
    """``bash course.sh lab ARGS`` (tests/labserver.py), checked to listen on loopback only; yields (base URL, token)."""
    import psutil

    with lab_server(root, *args) as base:
        port = int(base.rsplit(":", 1)[1])
        listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, f"JupyterLab listens on {listening}: it must listen on loopback only"
        yield base, TOKEN


def _page_config(base: str, token: str) -> dict:
    _, body = _get(f"{base}/lab?token={token}")
    data = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body, re.S)
    assert data, "no page config in the lab page"
    return json.loads(data.group(1))


def _no_news(base: str, token: str) -> None:
    """The news pop-up ("Would you like to get notified about official Jupyter news?") is off by default."""
    _, body = _get(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}")
    defaults = {k: v.get("default") for k, v in json.loads(body)["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    assert _page_config(base, token)["news"] == {"disabled": True}


def test_lab_opens_the_notebooks_headless_on_loopback(root):
    """`bash course.sh lab`: the notebooks folder, Validate only, no news pop-up, no broken nbgrader menus."""
    with _lab(root) as (base, token):
        assignment = assignments()[0]
        _, body = _get(f"{base}/api/contents?token={token}")
        assert {item["name"] for item in json.loads(body)["content"]} >= set(assignments())
        _, body = _get(f"{base}/api/contents/{assignment}?token={token}")
        assert f"{assignment}.ipynb" in [item["name"] for item in json.loads(body)["content"]]
        status, body = _get(f"{base}/lab/tree/{assignment}/{assignment}.ipynb?token={token}")
        assert status == 200 and b"JupyterLab" in body
        config = _page_config(base, token)
        assert config["rootUri"].endswith("/notebooks"), config["rootUri"]
        disabled = set(config["disabledExtensions"])
        for plugin in ("formgrader", "assignment-list", "course-list", "create-assignment"):
            assert f"@jupyter/nbgrader:{plugin}" in disabled, disabled
        assert "@jupyter/nbgrader:validate-assignment" not in disabled
        _no_news(base, token)
        for path in ("formgrader/api/assignments", "courses"):  # instructors' server extensions are off
            with pytest.raises(urllib.error.HTTPError, match="404"):
                _get(f"{base}/{path}?token={token}")


def test_lab_for_instructors_opens_the_course_root_with_the_formgrader_and_exchange(root):
    """`bash course.sh lab --instructor`: the repository root, the Formgrader, and nbgrader's lists without errors."""
    with _lab(root, "--instructor") as (base, token):
        assignment = assignments()[0]
        status, body = _get(f"{base}/api/contents/notebooks/{assignment}?token={token}")
        assert f"{assignment}.ipynb" in [item["name"] for item in json.loads(body)["content"]]
        assert not _page_config(base, token)["disabledExtensions"]
        _no_news(base, token)
        # The formgrader reads the course configuration: it sees our assignments in solutions/.
        # (Its first request creates the gradebook, which takes a while on a fresh clone.)
        status, body = _get(f"{base}/formgrader/api/assignments?token={token}", timeout=120)
        assert assignment in {a["name"] for a in json.loads(body)}, body[:500]
        _, body = _get(f"{base}/formgrader/manage_assignments?token={token}", timeout=60)
        assert b"exchange directory" not in body, "the Formgrader says the exchange is missing"
        # The Assignment List and Course List ask nbgrader's exchange ("Error fetching courses!" when missing).
        for path in ("courses", "assignments?course_id=going-deeper"):
            _, body = _get(f"{base}/{path}{'&' if '?' in path else '?'}token={token}", timeout=60)
            assert json.loads(body)["success"] is True, body[:500]
        assert (root / "autograder" / "exchange").is_dir()
