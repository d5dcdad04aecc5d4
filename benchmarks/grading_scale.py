"""Grading a class three ways: the local pool, shards merged, and a local Dask cluster (issue 19).

One synthetic class (``--per-notebook`` students for each of the five notebooks, right and wrong answers
mixed: the solution, or one of the course's wrong versions of an answer) is graded

* by the local pool (``grade all --workers W``),
* in ``--shards`` shards run one after another on this machine, each with the same W workers, then merged
  (what an array job does on S machines at once: the figure to compare is the slowest shard plus the merge),
* on a Dask cluster started here (a scheduler and W single-threaded workers),

and the scores must agree cell by cell. Prints each path's wall time and submissions per minute, the merge's
time, then one JSON line.

    .venv/bin/python benchmarks/grading_scale.py [--per-notebook 8] [--workers 2] [--shards 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from instructor.course import assignments  # noqa: E402
from instructor.scratch import ScratchCourse, replace_cell  # noqa: E402
from wrong import by_assignment  # noqa: E402

GRADE = [sys.executable, str(ROOT / "autograder" / "grade.py")]


def make_class(root: Path, per_notebook: int) -> int:
    course = ScratchCourse(root, course_config=True)
    wrongs = by_assignment()
    count = 0
    for a in assignments():
        course.add_source(a)
        course.generate(a)
        solution = nbformat.read(course.source_dir / a / f"{a}.ipynb", as_version=4)
        for k in range(per_notebook):
            nb = nbformat.from_dict(solution)
            if k % 2:  # every other student: one wrong answer of the course's list
                w = wrongs[a][(k // 2) % len(wrongs[a])]
                nb = replace_cell(nb, w.answer, w.source)
            course.submit(f"s{k:03d}", a, nb, f"{a}.ipynb")
            count += 1
    return count


def scores(root: Path) -> dict:
    out = {}
    for a in assignments():
        with open(root / "autograder" / "reports" / a / "grades.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                out[(a, r["student"])] = (r["status"], r["score"], tuple(v for k, v in sorted(r.items())
                                                                          if k.startswith("test_")))
    return out


def timed(args: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if run.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return time.perf_counter() - start


def dask_run(root: Path, workers: int, tmp: Path) -> float:
    dask = str(Path(sys.executable).parent / "dask")
    info = tmp / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        while not info.is_file():
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", str(workers),
                                       "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(workers, timeout=300)
        return timed([*GRADE, "all", "--course", str(root), "--scheduler", address, "--quiet"])
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-notebook", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        n = make_class(tmp / "class", args.per_notebook)
        paths = {k: tmp / k for k in ("local", "shards", "dask")}
        for p in paths.values():
            shutil.copytree(tmp / "class", p, symlinks=True)
        print(f"{n} submissions ({args.per_notebook} per notebook, right and wrong), {args.workers} workers, "
              f"{os.cpu_count()} cores", flush=True)
        wall = {"local": timed([*GRADE, "all", "--course", str(paths["local"]), "--workers", str(args.workers),
                                "--quiet"])}
        print(f"  local pool      {wall['local']:7.1f} s  {60 * n / wall['local']:6.1f} submissions/min", flush=True)
        shard_times = []
        for i in range(args.shards):
            shard_times.append(timed([*GRADE, "all", "--course", str(paths["shards"]), "--workers", str(args.workers),
                                      "--shard", f"{i}/{args.shards}", "--bundle", str(tmp / f"b{i}"), "--quiet"]))
        merge = timed([*GRADE, "merge", *[str(tmp / f"b{i}") for i in range(args.shards)], "--course",
                       str(paths["shards"])])
        wall["shards_in_turn"] = sum(shard_times) + merge
        wall["shards_side_by_side"] = max(shard_times) + merge
        print(f"  {args.shards} shards       {wall['shards_in_turn']:7.1f} s in turn here (slowest shard "
              f"{max(shard_times):.1f} s + merge {merge:.1f} s = {wall['shards_side_by_side']:.1f} s on "
              f"{args.shards} machines)", flush=True)
        wall["dask"] = dask_run(paths["dask"], args.workers, tmp)
        print(f"  Dask cluster    {wall['dask']:7.1f} s  {60 * n / wall['dask']:6.1f} submissions/min", flush=True)
        local = scores(paths["local"])
        agree = {k: scores(paths[k]) == local for k in ("shards", "dask")}
        print(f"  scores agree with the local pool: shards {agree['shards']}, Dask {agree['dask']}")
        print(json.dumps({"benchmark": "grading_scale", "submissions": n, "per_notebook": args.per_notebook,
                          "workers": args.workers, "shards": args.shards, "cores": os.cpu_count(),
                          "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
                          "shard_seconds": [round(t, 1) for t in shard_times], "merge_seconds": round(merge, 1),
                          "submissions_per_minute": {k: round(60 * n / v, 2) for k, v in wall.items()},
                          "scores_agree": agree}))
        if not all(agree.values()):
            sys.exit(1)


if __name__ == "__main__":
    main()
