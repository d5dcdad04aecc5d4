"""What an answer key made only of the course's package scores, with and without the own-work rule.

The key (tests/answer_key.py) replaces every answer of every notebook by calls into what the course
installs: the package's own torch oracles, training helpers and models where it has them, the graders'
references (``goingdeeper.grading.load_reference``) everywhere else. In one run, with plain ``nbgrader
autograde`` in a scratch course, for every assignment:

* with the rule: the key as a student would submit it (the test cells as released);
* without the rule: the same key, in a course whose test cells have their ``own_work(...)`` line removed:
  what the key would earn if nothing read the answers' code.

Prints a table, then the figures as one final JSON line.

    bash course.sh setup && .venv/bin/python benchmarks/answer_key_score.py
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import nbformat

from instructor.course import SOLUTIONS, assignments
from instructor.scratch import ROOT, ScratchCourse

sys.path.insert(0, str(ROOT / "tests"))
from answer_key import answer_key  # noqa: E402

OWN_WORK = re.compile(r"^own_work\(.*\).*\n", re.M)


def _score(root: Path, assignment: str, without_rule: bool) -> tuple[float, float]:
    course = ScratchCourse(root)
    course.add_source(assignment)
    name = f"{assignment}.ipynb"
    if without_rule:  # the course's test cells without their first check
        path = course.source_dir / assignment / name
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = OWN_WORK.sub("", cell.source)
        nbformat.write(nb, path)
    course.generate(assignment)
    solution = nbformat.read(course.source_dir / assignment / name, as_version=4)
    course.submit("answerkey", assignment, answer_key(assignment, solution), name)
    course.autograde(assignment)
    return course.total(assignment, "answerkey")


def main() -> None:
    rows = []
    for assignment in assignments():
        (source,) = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
        with tempfile.TemporaryDirectory() as tmp:
            with_rule = _score(Path(tmp) / "with", assignment, without_rule=False)
            without = _score(Path(tmp) / "without", assignment, without_rule=True)
        rows.append({"assignment": assignment, "max": with_rule[1], "with_rule": with_rule[0],
                     "without_rule": without[0]})
        print(f"{assignment:26} {with_rule[0]:5g} of {with_rule[1]:g} with the rule; "
              f"{without[0]:5g} without it", flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("max", "with_rule", "without_rule")}
    print(f"{'all':26} {total['with_rule']:5g} of {total['max']:g} with the rule; {total['without_rule']:5g} without it")
    print(json.dumps({"answer_key": rows, "total": total}))


if __name__ == "__main__":
    main()
