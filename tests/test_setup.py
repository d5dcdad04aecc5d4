"""Set-up: pins agree everywhere, course.sh behaves, and JupyterLab opens the series with its extensions."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


from goingdeeper.course import assignments


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
    bad = subprocess.run(["bash", str(root / "course.sh"), "labb"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown command 'labb'" in bad.stderr and "bash course.sh help" in bad.stderr


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def test_lab_opens_the_series_headless_on_loopback(root):
    port, token = _free_port(), "going-deeper-test"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["JUPYTER_CONFIG_DIR"] = str(root / "build" / "test-jupyter-config")
    proc = subprocess.Popen(
        ["bash", str(root / "course.sh"), "lab", f"--port={port}", f"--IdentityProvider.token={token}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                status, _ = _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("JupyterLab did not start:\n" + proc.stdout.read().decode())
                time.sleep(0.5)
        assert status == 200
        assignment = assignments()[0]
        status, body = _get(f"{base}/api/contents/notebooks/{assignment}?token={token}")
        names = [item["name"] for item in json.loads(body)["content"]]
        assert f"{assignment}.ipynb" in names
        status, body = _get(f"{base}/lab/tree/notebooks/{assignment}/{assignment}.ipynb?token={token}")
        assert status == 200 and b"JupyterLab" in body
        # The formgrader reads the course configuration: it sees our assignments in solutions/.
        # (Its first request creates the gradebook, which takes a while on a fresh clone.)
        status, body = _get(f"{base}/formgrader/api/assignments?token={token}", timeout=120)
        assert assignment in {a["name"] for a in json.loads(body)}, body[:500]
        import psutil

        listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, f"JupyterLab listens on {listening}: it must listen on loopback only"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
