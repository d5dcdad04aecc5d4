"""The class report: one HTML page per assignment that shows where the class struggles.

For every graded test cell: how many submissions earned its points, and the
failure messages that fired most often (numbers replaced by '#', so the same
hint with different values counts once). Then every submission that could
not be graded, was missing, misnamed or flagged, with the reason. Plain HTML
and CSS, no scripts. The report describes the whole class: every student the
gradebook or the submissions folder knows, graded in this run or earlier.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
.bar{display:flex;height:1.1rem;width:18rem;background:#eee;border-radius:3px;overflow:hidden}
.ok{background:#2e7d32}.bad{background:#c62828}.none{background:#9e9e9e}
.msg{font-family:monospace;font-size:.85rem}.late{color:#8a4b00}.override{color:#0d47a1}.flag{color:#b71c1c}.small{color:#666;font-size:.85rem}
"""


def message_pattern(message: str) -> str:
    """A failure message with its numbers replaced by '#', so that one hint counts once."""
    return _NUMBER.sub("#", message).strip()[:300]


def exercise_stats(results: list[Any]) -> list[dict]:
    stats: dict[str, dict] = {}
    for r in results:
        for c in r.cells:
            s = stats.setdefault(c.grade_id, {"id": c.grade_id, "max": c.max_points, "full": 0, "zero": 0,
                                              "ungraded": 0, "messages": Counter()})
            if r.score is None:
                s["ungraded"] += 1
            elif c.passed:
                s["full"] += 1
            else:
                s["zero"] += 1
                s["messages"][message_pattern(c.message)] += 1
    return list(stats.values())


def write_report(path: Path, assignment: str, results: list[Any]) -> None:
    e = html.escape
    graded = [r for r in results if r.score is not None]
    scores = sorted(r.score for r in graded)
    max_score = max((r.max_score for r in results), default=0)
    mean = sum(scores) / len(scores) if scores else 0.0
    count = Counter(r.status for r in results)
    others = ", ".join(f"{count[k]} {label}" for k, label in (
        ("ungradable", "could not be graded"), ("missing", "missing"), ("misnamed", "misnamed (not graded)"),
        ("grader error", "not graded because the grader failed")) if count[k])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{e(assignment)}: class report</title>",
             f"<style>{CSS}</style><h1>{e(assignment)}: class report</h1>",
             f"<p>{len(results)} students, {len(graded)} graded"
             + (f", {others}" if others else "") + f", {sum(1 for r in results if r.flags)} flagged. "
             f"Mean score {mean:.2f} / {max_score:g}"
             + (f", median {scores[len(scores) // 2]:g}" if scores else "") + ".</p>",
             "<h2>Exercises</h2><p class='small'>Green: earned the points; red: failed; grey: not graded.</p>",
             "<table><tr><th>test cell</th><th>points</th><th>submissions</th><th>most frequent failures</th></tr>"]
    for s in exercise_stats(results):
        total = s["full"] + s["zero"] + s["ungraded"] or 1
        bar = "".join(f"<div class='{cls}' style='width:{100 * s[key] / total:.1f}%'></div>"
                      for cls, key in (("ok", "full"), ("bad", "zero"), ("none", "ungraded")))
        top = "".join(f"<div class='msg'>{n}&times; {e(m)}</div>" for m, n in s["messages"].most_common(5))
        parts.append(f"<tr><td><code>{e(s['id'])}</code></td><td>{s['max']:g}</td>"
                     f"<td><div class='bar'>{bar}</div><span class='small'>{s['full']} passed, {s['zero']} failed"
                     + (f", {s['ungraded']} not graded" if s["ungraded"] else "") + f"</span></td><td>{top}</td></tr>")
    parts.append("</table><h2>Submissions</h2><table><tr><th>student</th><th>score</th><th>status</th>"
                 "<th>reason, flags and notes</th><th>seconds</th></tr>")
    for r in sorted(results, key=lambda r: r.student):
        penalty = getattr(r, "penalty", 0.0) or 0.0
        score = "&mdash;" if r.score is None else f"{max(0.0, r.score - penalty):g} / {r.max_score:g}"
        if r.score is not None and penalty:
            score += f"<br><span class='small'>{r.score:g} before the late penalty</span>"
        details = [e(r.reason)] if r.reason and r.score is None else []
        if getattr(r, "submitted_as", ""):
            details.append(e(f"graded the file {r.submitted_as}"))
        if getattr(r, "late", ""):
            details.append(f"<span class='late'>{e(r.late)}</span>")
        details += [f"<span class='override'>graded by hand: {e(o)}</span>" for o in getattr(r, "overrides", [])]
        details += [e(p) for p in r.problems]
        details += [f"<span class='flag'>flag: {e(f)}</span>" for f in r.flags]
        details += [f"<span class='small'>{e(n)}</span>" for n in r.notes]
        parts.append(f"<tr><td>{e(r.student)}</td><td>{score}</td><td>{e(r.status)}</td>"
                     f"<td>{'<br>'.join(details)}</td><td>{r.seconds:g}</td></tr>")
    parts.append("</table>")
    from similarity_report import section_html  # the pairs `bash course.sh similarity` found, if it ran

    parts.append(section_html(path.parent))
    path.write_text("\n".join(parts), encoding="utf-8")
