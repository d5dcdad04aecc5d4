"""Our grading command against plain sequential ``nbgrader autograde``, on the same machine, in one run.

N copies of a full submission (every notebook of the series, solved) are
graded twice in scratch courses: once with ``nbgrader autograde`` (one
submission after another, as nbgrader does), once with
``autograder/grade.py`` (parallel workers, sandboxed, tests outside the
student's process). The notebooks' own execution time (nbclient, no
grading) is measured too, to give our overhead over it.

    .venv/bin/python benchmarks/grading_speed.py [--copies 6] [--workers 2]

Prints a table, then the figures as one final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from instructor.course import SOLUTIONS, assignments
from instructor.scratch import ROOT, ScratchCourse


def _course(tmp: Path, name: str, copies: int, course_config: bool) -> ScratchCourse:
    course = ScratchCourse(tmp / name, course_config=course_config)
    for a in assignments():
        course.add_source(a)
        course.generate(a)
        for source in sorted((SOLUTIONS / a).glob("*.ipynb")):
            nb = nbformat.read(source, as_version=4)
            for i in range(copies):
                course.submit(f"student{i:02d}", a, nb, source.name)
    return course


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        execute_s = 0.0
        for a in assignments():
            for source in sorted((SOLUTIONS / a).glob("*.ipynb")):
                nb = nbformat.read(source, as_version=4)
                start = time.perf_counter()
                NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_name}}).execute()
                execute_s += time.perf_counter() - start

        plain = _course(tmp, "nbgrader", args.copies, course_config=False)
        start = time.perf_counter()
        for a in assignments():
            plain.autograde(a)
        nbgrader_s = time.perf_counter() - start

        ours = _course(tmp, "ours", args.copies, course_config=True)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, str(ROOT / "autograder" / "grade.py"), "all", "--course", str(ours.root),
                              "--workers", str(args.workers), "--quiet"], capture_output=True, text=True)
        ours_s = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(run.stdout + run.stderr)
        for i in range(args.copies):
            for a in assignments():
                assert plain.total(a, f"student{i:02d}") == ours.total(a, f"student{i:02d}"), "the two graders disagree"

    n = args.copies
    figures = {
        "benchmark": "grading_speed",
        "submissions": n,
        "assignments": assignments(),
        "workers": args.workers,
        "execute_s_per_submission": round(execute_s, 2),
        "nbgrader_sequential_s_per_submission": round(nbgrader_s / n, 2),
        "ours_s_per_submission": round(ours_s / n, 2),
        "speedup": round(nbgrader_s / ours_s, 2),
        "ours_overhead_s_per_submission_over_execution": round(ours_s / n - execute_s, 2),
    }
    print(f"{n} submissions: nbgrader {nbgrader_s:.1f} s, ours {ours_s:.1f} s ({args.workers} workers), "
          f"plain execution {execute_s:.1f} s per submission")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
