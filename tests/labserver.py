"""JupyterLab started the way the README says (``bash course.sh lab ...``), for the tests that talk to it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from instructor.scratch import ROOT

TOKEN = "going-deeper-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def course_venv() -> Path:
    """The virtual environment ``bash course.sh`` of this repository uses."""
    return Path(os.environ.get("GOINGDEEPER_VENV") or ROOT / ".venv")


def venv_is_current(course: Path = ROOT) -> str | None:
    """None when ``course.sh`` in ``course`` would start without installing anything; else why not.

    A test that starts ``course.sh`` of another folder (the student edition) must not let it install
    into the course's environment.
    """
    venv = course_venv()
    stamp = venv / ".goingdeeper-installed"
    want = subprocess.run("cat requirements.txt pyproject.toml | cksum", shell=True, cwd=course,
                          capture_output=True, text=True).stdout
    if not (venv / "bin" / "python").exists() or not stamp.is_file() or stamp.read_text() != want:
        return f"{venv} is missing or not set up for the current pins: run `bash course.sh setup` first"
    return None


@contextlib.contextmanager
def lab_server(course: Path = ROOT, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``bash <course>/course.sh lab ARGS`` on a free loopback port, headless, with a throwaway user config.

    Yields the base URL; the token is :data:`TOKEN`. ``env`` adds to the environment.
    """
    port = free_port()
    # As from a plain shell: no display, and no Jupyter configuration path of the test run's own.
    full_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "JUPYTER_CONFIG_PATH")}
    full_env.update(env or {})
    with tempfile.TemporaryDirectory() as user:
        full_env["JUPYTER_CONFIG_DIR"] = str(Path(user) / "config")
        full_env["JUPYTER_RUNTIME_DIR"] = str(Path(user) / "runtime")
        log = open(Path(user) / "lab.log", "w+b")
        proc = subprocess.Popen(
            ["bash", str(course / "course.sh"), "lab", f"--port={port}", f"--IdentityProvider.token={TOKEN}", *args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                try:
                    get(f"{base}/api/status?token={TOKEN}")
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        log.seek(0)
                        raise AssertionError("JupyterLab did not start:\n" + log.read().decode(errors="replace"))
                    time.sleep(0.5)
            yield base
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
