"""How long nbgrader takes to autograde one submission, against running the notebook plainly.

In one run on this machine, for every assignment:

* baseline: execute the solution notebook with nbclient (what running it top to bottom costs), in grading
  mode (``NBGRADER_EXECUTION=autograde``, as nbgrader runs it: notebook 05 trains tiny networks then);
* autograde: ``nbgrader autograde`` of the solution as one student's submission, in a scratch
  course with nbgrader's default configuration (process start, database, hidden tests included).

Prints a table, then the figures as one final JSON line.

    bash course.sh setup && .venv/bin/python benchmarks/autograde_time.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from instructor.course import SOLUTIONS, assignments
from instructor.scratch import ScratchCourse


def main() -> None:
    results = []
    for assignment in assignments():
        (source,) = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
        with tempfile.TemporaryDirectory() as tmp:
            nb = nbformat.read(source, as_version=4)
            os.environ["NBGRADER_EXECUTION"] = "autograde"  # the kernel inherits it: the notebooks' grading mode
            try:
                start = time.perf_counter()
                NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
                execute_s = time.perf_counter() - start
            finally:
                del os.environ["NBGRADER_EXECUTION"]

            course = ScratchCourse(Path(tmp) / "course")
            course.add_source(assignment)
            course.generate(assignment)
            course.submit("student", assignment, nbformat.read(source, as_version=4), source.name)
            start = time.perf_counter()
            course.autograde(assignment)
            autograde_s = time.perf_counter() - start
            score, max_score = course.total(assignment, "student")
        results.append(
            {
                "assignment": assignment,
                "execute_s": round(execute_s, 2),
                "autograde_s": round(autograde_s, 2),
                "overhead_s": round(autograde_s - execute_s, 2),
                "score": score,
                "max_score": max_score,
            }
        )
        print(f"{assignment}: execute {execute_s:.1f} s, autograde {autograde_s:.1f} s, score {score}/{max_score}")
    print(json.dumps({"benchmark": "autograde_time", "results": results}))


if __name__ == "__main__":
    main()
