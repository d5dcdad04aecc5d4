"""How well the similarity report finds planted copies, and how many honest pairs it lists.

A synthetic class of notebook 01 (tests/synthetic_class.py): honest students whose every answer is one of
the course's solution, its right and wrong versions (tests/wrong) or a hand-written honest version, drawn at
random; and planted copiers, each copying one honest student with renamed variables, reordered functions
and added comments (each transformation checked to keep the code's behaviour). For a class of 30 honest
students with 6 copiers and one of 60 with 12, and a few seeds each, ``instructor.similarity`` compares
every pair, as ``bash course.sh similarity`` does (the repository's solutions and release; nothing is
written into the course), and this prints:

* planted pairs found (copier ~ the student copied) and honest pairs listed (two honest students), at the
  command's threshold and score, and at 0.6;
* other pairs listed: a copier with a third student who resembles the one copied;
* for each score definition (min, max, mean of copydetect's two fractions): the lowest planted score and
  the highest honest one (the separation);
* the seconds of the whole analysis (reading the notebooks, fingerprints, every pair, the side by side).

Prints a table, then the figures as one final JSON line.

    .venv/bin/python benchmarks/similarity_planted.py            # --seeds 3 --threshold 0.8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from instructor import similarity
from instructor.scratch import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from synthetic_class import make_class, submit_all  # noqa: E402

SIZES = [(30, 6), (60, 12)]


def one_run(honest: int, planted: int, seed: int, threshold: float) -> dict:
    klass = make_class(honest=honest, planted=planted, seed=seed)
    a = klass["assignment"]
    with tempfile.TemporaryDirectory(prefix="similarity-bench-") as tmp:
        submitted = Path(tmp) / "submitted"
        submit_all(submitted, klass["notebooks"], a, klass["name"])
        started = time.perf_counter()
        data = similarity.analyse(ROOT, submitted, a, threshold)  # what the command writes to similarity.json
        seconds = time.perf_counter() - started
        course = similarity.load_course(ROOT, a)  # every pair's fractions, for the separation
        students, _, _ = similarity.read_class(ROOT, submitted, course)
        result = similarity.compare(students, course.boilerplate())
    planted_pairs = {frozenset(p) for p in klass["planted"]}
    honest_ids = set(klass["honest"])

    def kind(x: str, y: str) -> str:
        if frozenset((x, y)) in planted_pairs:
            return "planted"
        return "honest" if x in honest_ids and y in honest_ids else "other"

    scores: dict[str, dict[str, list[float]]] = {how: {"planted": [], "honest": [], "other": []}
                                                 for how in ("min", "max", "mean")}
    for i, j, fi, fj, _ in result.pairs:
        k = kind(students[i].student, students[j].student)
        for how in scores:
            scores[how][k].append(similarity.score((fi, fj), how))
    listed = [kind(p["a"], p["b"]) for p in data["pairs"]]
    mine = scores[similarity.SCORE]
    return {
        "honest": honest, "planted_pairs": len(planted_pairs), "seed": seed,
        "planted_found": listed.count("planted"), "honest_pairs_listed": listed.count("honest"),
        "other_pairs_listed": listed.count("other"), "honest_pairs": len(mine["honest"]),
        "at_0.6": {k: sum(s >= 0.6 for s in mine[k]) for k in ("planted", "honest", "other")},
        "separation": {how: {"lowest_planted": round(min(v["planted"]), 3), "highest_honest": round(max(v["honest"]), 3),
                             "highest_other": round(max(v["other"], default=0.0), 3)} for how, v in scores.items()},
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="classes per size (seeds 0, 1, ...)")
    parser.add_argument("--threshold", type=float, default=similarity.THRESHOLD)
    args = parser.parse_args()
    runs = []
    print(f"score: {similarity.SCORE} of the two fractions; threshold {args.threshold}; copydetect noise "
          f"{similarity.NOISE_T}, guarantee {similarity.GUARANTEE_T}; {os.cpu_count()} cores")
    print(f"{'honest':>6} {'seed':>4} {'planted found':>13} {'honest listed':>16} {'other listed':>12} "
          f"{'at 0.6 (planted/honest)':>24} {'min: low planted/high honest':>29} {'max: ditto':>12} {'seconds':>8}")
    for honest, planted in SIZES:
        for seed in range(args.seeds):
            r = one_run(honest, planted, seed, args.threshold)
            runs.append(r)
            s = r["separation"]
            print(f"{honest:>6} {seed:>4} {r['planted_found']:>6}/{r['planted_pairs']:<6} "
                  f"{r['honest_pairs_listed']:>7}/{r['honest_pairs']:<8} {r['other_pairs_listed']:>12} "
                  f"{r['at_0.6']['planted']:>14}/{r['at_0.6']['honest']:<9} "
                  f"{s['min']['lowest_planted']:>18.3f}/{s['min']['highest_honest']:<10.3f} "
                  f"{s['max']['lowest_planted']:>5.3f}/{s['max']['highest_honest']:<6.3f} {r['seconds']:>8.2f}",
                  flush=True)
    by_size = {}
    for honest, planted in SIZES:
        mine = [r for r in runs if r["honest"] == honest]
        by_size[str(honest)] = {
            "honest": honest, "planted_pairs": sum(r["planted_pairs"] for r in mine),
            "planted_found": sum(r["planted_found"] for r in mine),
            "honest_pairs": sum(r["honest_pairs"] for r in mine),
            "honest_pairs_listed": sum(r["honest_pairs_listed"] for r in mine),
            "other_pairs_listed": sum(r["other_pairs_listed"] for r in mine),
            "honest_pairs_listed_at_0.6": sum(r["at_0.6"]["honest"] for r in mine),
            "lowest_planted": min(r["separation"][similarity.SCORE]["lowest_planted"] for r in mine),
            "highest_honest": max(r["separation"][similarity.SCORE]["highest_honest"] for r in mine),
            "seconds": max(r["seconds"] for r in mine),
        }
    print(json.dumps({"benchmark": "similarity_planted", "threshold": args.threshold, "score": similarity.SCORE,
                      "noise_threshold": similarity.NOISE_T, "seeds": args.seeds, "sizes": by_size, "runs": runs}))


if __name__ == "__main__":
    main()
