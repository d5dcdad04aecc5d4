"""Grading a large class (issue 19): shards merged into the gradebook, the deployment templates run as an array
job would run them, and the same grading on a real Dask cluster (a scheduler and two workers on this machine,
one killed mid-run). Every path must give the class the local pool's scores, cell by cell."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from instructor.scratch import ROOT, ScratchCourse, replace_cell
from wrong import computational_graphs as wrong01

sys.path.insert(0, str(ROOT / "autograder"))
import bundles  # noqa: E402
from sandbox.trusted import bwrap_available  # noqa: E402

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not available here "
                                "(apt install bubblewrap): the grading command refuses to run without it")

A = "01_computational_graphs"
NAME = f"{A}.ipynb"
GRADE = [sys.executable, str(ROOT / "autograder" / "grade.py")]


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """A course with six students: a right answer, two wrong ones, an unanswered notebook, an empty folder and
    two notebooks with other names (a row each, never graded)."""
    root = tmp_path_factory.mktemp("class") / "course"
    course = ScratchCourse(root, course_config=True)
    course.add_source(A)
    course.generate(A)
    solution = nbformat.read(course.source_dir / A / NAME, as_version=4)
    first, second = wrong01.WRONG[0], next(w for w in wrong01.WRONG if w.answer != wrong01.WRONG[0].answer)
    course.submit("ada", A, solution, NAME)
    course.submit("bob", A, replace_cell(nbformat.from_dict(solution), first.answer, first.source), NAME)
    course.submit("cy", A, nbformat.read(course.release_dir / A / NAME, as_version=4), NAME)
    course.submit("dan", A, replace_cell(nbformat.from_dict(solution), second.answer, second.source), NAME)
    (course.submitted_dir / "eve").mkdir()
    course.submit("fay", A, solution, "first try.ipynb")
    course.submit("fay", A, solution, "second try.ipynb")
    return root


def _copy(class_folder: Path, to: Path) -> Path:
    shutil.copytree(class_folder, to, symlinks=True)
    return to


def _run(args: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _class(root: Path) -> dict[str, tuple]:
    """Every student's status, score and per-cell points, as grades.csv says."""
    with open(root / "autograder" / "reports" / A / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cells = [k for k in rows[0] if k.startswith("test_")]
    return {r["student"]: (r["status"], r["score"], tuple(r[c] for c in cells)) for r in rows}


def _gradebook(root: Path) -> dict[str, float]:
    course = ScratchCourse(root, course_config=True)
    return {s: course.total(A, s)[0] for s in ("ada", "bob", "cy", "dan")}


@pytest.fixture(scope="module")
def local(class_folder, tmp_path_factory) -> Path:
    """The class graded by the local pool: what every other path must reproduce."""
    root = _copy(class_folder, tmp_path_factory.mktemp("local") / "course")
    run = _run([*GRADE, A, "--course", str(root), "--workers", "2", "--quiet"])
    assert run.returncode == 0, run.stdout + run.stderr
    graded = _class(root)
    assert graded["ada"][0] == "graded" and float(graded["ada"][1]) > float(graded["bob"][1])
    assert graded["eve"][0] == "missing" and graded["fay"][0] == "misnamed"
    return root


def test_shards_from_the_templates_merge_into_what_one_local_run_writes(class_folder, local, tmp_path):
    root = _copy(class_folder, tmp_path / "course")
    shared = tmp_path / "bundles"
    shared.mkdir()
    # The job files carry paths unquoted (deploy refuses one with a space): a checkout under a path with spaces
    # (CI's) is reached through a link without any.
    checkout = tmp_path / "checkout"
    checkout.symlink_to(ROOT)
    values = bundles.deploy_values(A, 2, str(shared), checkout, root, 2)
    # Shard 0 as the Kubernetes Indexed Job's pod 0 runs it: the container's command, JOB_COMPLETION_INDEX=0.
    job = yaml.safe_load(bundles.render("k8s", dict(values, IMAGE="goingdeeper:test")))
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    (container,) = job["spec"]["template"]["spec"]["containers"]
    run = _run([str(part) for part in container["command"]], env={"JOB_COMPLETION_INDEX": "0"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert (shared / "shard-0" / "bundle.json").is_file() and "shard 0/2" in run.stdout
    assert not (root / "autograder" / "reports").exists(), "a shard touched the course's reports"
    # A second shard pointed at the same folder is refused, and shard 0's bundle stays.
    run = _run([*GRADE, A, "--course", str(root), "--shard", "1/2", "--bundle", str(shared / "shard-0")])
    assert run.returncode == 2 and "holds the bundle of shard 0/2" in run.stderr
    assert (shared / "shard-0" / "bundle.json").is_file()
    # Shard 1 as the Slurm array's task 1 runs it: the rendered script itself, SLURM_ARRAY_TASK_ID=1.
    script = tmp_path / "grade.sbatch"
    script.write_text(bundles.render("slurm", values))
    assert "#SBATCH --array=0-1" in script.read_text()
    run = _run(["bash", str(script)], env={"SLURM_ARRAY_TASK_ID": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    shard_of = {s: bundles.shard_of(s, A, 2) for s in ("ada", "bob", "cy", "dan", "eve", "fay")}
    for i in (0, 1):
        held = {p.stem for p in (shared / f"shard-{i}" / "results" / A).glob("*.json")}
        assert held == {s for s, k in shard_of.items() if k == i}

    # Only shard 0 merged: shard 1's students are not graded yet, never missing.
    merge = _run([*GRADE, "merge", str(shared / "shard-0"), "--course", str(root)])
    assert merge.returncode == 1 and "1/2" in merge.stderr, merge.stdout + merge.stderr
    partial = _class(root)
    for student, shard in shard_of.items():
        if shard == 1:
            assert partial[student][0] == "grader error" and partial[student][1] == "", partial[student]
    # Both merged: the class as one local run grades it, in the CSV and in the gradebook.
    merge = _run([*GRADE, "merge", str(shared / "shard-0"), str(shared / "shard-1"), "--course", str(root)])
    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert _class(root) == _class(local)
    assert _gradebook(root) == _gradebook(local)
    assert (root / "autograder" / "autograded" / "ada" / A / NAME).is_file()
    assert (root / "autograder" / "reports" / A / "logs" / "bob.log").is_file()
    html = (root / "autograder" / "reports" / A / "report.html").read_text()
    assert all(s in html for s in shard_of) and "6 students" in html
    # Merging again changes nothing.
    before = {p: p.read_bytes() for p in (root / "autograder" / "reports" / A).glob("*.*")}
    merge = _run([*GRADE, "merge", str(shared / "shard-1"), str(shared / "shard-0"), "--course", str(root)])
    assert merge.returncode == 0, merge.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert _gradebook(root) == _gradebook(local)

    # A bundle of another course, another release or another grader is refused, and nothing is merged.
    for field, value, words in (("course", "another-course", "graded for the course"),
                                ("grader", "0123456789abcdef", "another version of the grader"),
                                ("releases", {A: "0123456789abcdef"}, "another release of")):
        forged = tmp_path / f"forged-{field}"
        shutil.copytree(shared / "shard-1", forged)
        info = json.loads((forged / "bundle.json").read_text())
        info[field] = value
        (forged / "bundle.json").write_text(json.dumps(info))
        merge = _run([*GRADE, "merge", str(shared / "shard-0"), str(forged), "--course", str(root)])
        assert merge.returncode == 2 and words in merge.stderr and "nothing was merged" in merge.stderr, merge.stderr
        assert "Traceback" not in merge.stderr
    unfinished = tmp_path / "unfinished"
    shutil.copytree(shared / "shard-0", unfinished)
    (unfinished / "bundle.json").unlink()
    merge = _run([*GRADE, "merge", str(unfinished), "--course", str(root)])  # a shard that crashed: a warning
    assert merge.returncode == 1 and "has not finished" in merge.stderr and "Traceback" not in merge.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_shard_arguments_say_what_to_write(tmp_path):
    assert bundles.parse_shard("3/8", {}) == (3, 8)
    assert bundles.parse_shard("8", {"JOB_COMPLETION_INDEX": "5"}) == (5, 8)
    # One task of the array run again alone (sbatch --array=3) is still shard 3.
    assert bundles.parse_shard("4", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "3"}) == (3, 4)
    for text, env, words in (("8", {}, "neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID"),
                             ("8/8", {}, "outside 0..7"), ("a/b", {}, "write i/N"), ("0", {}, "at least 1")):
        with pytest.raises(bundles.ShardError, match=words):
            bundles.parse_shard(text, env)
    run = _run([*GRADE, A, "--shard", "1/2"])
    assert run.returncode == 2 and "--shard and --bundle go together" in run.stderr
    # The same pair always falls to the same shard, and a class spreads over all of them.
    owners = [bundles.shard_of(f"student{i}", A, 4) for i in range(200)]
    assert owners == [bundles.shard_of(f"student{i}", A, 4) for i in range(200)] and set(owners) == {0, 1, 2, 3}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_a_dask_cluster_grades_the_class_as_the_local_pool_does_when_a_worker_dies(class_folder, local, tmp_path):
    pytest.importorskip("distributed", reason="Dask is the 'cluster' extra (pip install 'dask[distributed]==2026.8.0')")
    from distributed import Client

    root = _copy(class_folder, tmp_path / "course")
    dask = str(Path(sys.executable).parent / "dask")
    info = tmp_path / "scheduler.json"
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)], tmp_path / "scheduler.log")]
    try:
        deadline = time.monotonic() + 120
        while not info.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        # w1 without a nanny (killed, it stays dead); w2 as Dask starts workers by default, under a nanny (a
        # daemonic process, whose grading child the grader starts all the same).
        for name, nanny in (("w1", ["--no-nanny"]), ("w2", [])):
            procs.append(_start([dask, "worker", address, "--name", name, "--nthreads", "1", *nanny,
                                 "--no-dashboard"], tmp_path / f"{name}.log"))
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            grading = subprocess.Popen([*GRADE, A, "--course", str(root), "--scheduler", address, "--quiet"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Kill w1 while it grades a submission (its process, at once: no nanny brings it back).
            killed = None
            deadline = time.monotonic() + 300
            while killed is None and time.monotonic() < deadline and grading.poll() is None:
                workers = client.scheduler_info()["workers"]
                busy = client.processing()
                for addr, w in workers.items():
                    if str(w.get("name")) == "w1" and busy.get(addr):
                        time.sleep(2)  # mid-task
                        os.kill(procs[1].pid, signal.SIGKILL)
                        killed = addr
                time.sleep(0.2)
            out, err = grading.communicate(timeout=900)
        assert killed is not None, "w1 never got a submission to grade: " + out + err
        assert grading.returncode == 0, out + err
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    assert _class(root) == _class(local)
    assert _gradebook(root) == _gradebook(local)
    logs = {s: (root / "autograder" / "reports" / A / "logs" / f"{s}.log").read_text() for s in ("ada", "bob", "cy", "dan")}
    assert all("graded on" in text for text in logs.values())
    assert (root / "autograder" / "autograded" / "dan" / A / NAME).is_file()


def test_a_submission_whose_grading_fails_on_two_workers_is_ungradable_with_both_reasons(monkeypatch, tmp_path):
    """cluster.run_dask's retry, on stand-ins for Dask's client and futures (the real cluster test above kills
    one worker; failing twice on a real cluster would need two workers to die under the same submission)."""
    pytest.importorskip("distributed", reason="Dask is the 'cluster' extra")
    import cluster
    import distributed
    import grade

    class KilledWorker(Exception):
        pass

    class Future:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def result(self):
            fields = self.args[0]
            if fields["student"] == "doomed":
                raise KilledWorker(f"attempt on worker {len(attempts)}")
            if fields["student"] == "misconfigured":
                raise ModuleNotFoundError("No module named 'grade'")
            return {"result": {"student": fields["student"], "assignment": A, "notebook": A, "cells": []},
                    "files": {}, "log": "ok\n", "host": "stand-in"}

    attempts: list[str] = []

    class Client:
        def submit(self, fn, *args, key, pure):
            attempts.append(args[0]["student"])
            return Future(fn, args)

        def scheduler_info(self):
            return {"workers": {"w": {}}}

        def close(self):
            pass

    class Stream:
        def __init__(self, futures):
            self.queue = list(futures)

        def add(self, future):
            self.queue.append(future)

        def __iter__(self):
            while self.queue:
                yield self.queue.pop(0)

    monkeypatch.setattr(cluster, "_client", lambda address: Client())
    monkeypatch.setattr(distributed, "as_completed", Stream)
    limits = grade.Limits()
    tasks = [grade.Task(s, A, str(tmp_path / s / NAME), str(tmp_path / "src.ipynb"), "sqlite://",
                        str(tmp_path / "out" / s), str(tmp_path / "logs" / f"{s}.log"), limits, True, False, None, A)
             for s in ("fine", "doomed", "misconfigured")]
    seen = []
    results = cluster.run_dask(tasks, "tcp://stand-in:8786", lambda r, t: seen.append((r.student, r.status)))
    assert attempts.count("doomed") == 2 and attempts.count("fine") == 1 and attempts.count("misconfigured") == 2
    by = {r.student: r for r in results}
    assert by["fine"].status == "graded" and by["doomed"].status == "ungradable"
    assert "failed twice on the cluster" in by["doomed"].reason
    assert "died (attempt on worker" in by["doomed"].reason and by["doomed"].reason.count("attempt on worker") == 2
    # A failure that is not a dead grading process is the grader's: recorded for no one, never a student's 0.
    assert by["misconfigured"].status == "grader error" and "No module named 'grade'" in by["misconfigured"].reason
    assert sorted(seen) == [("doomed", "ungradable"), ("fine", "graded"), ("misconfigured", "grader error")]
    assert "[graded on stand-in]" in (tmp_path / "logs" / "fine.log").read_text()
