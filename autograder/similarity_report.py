"""The similarity section of the class report: pairs of students whose answers look alike, side by side.

``bash course.sh similarity A`` (instructor/similarity.py) writes ``autograder/reports/<A>/similarity.json``;
:func:`section_html` turns it into a section of ``report.html``: the pairs at or above the threshold, each
with its matching lines in two columns, cell against cell, the matching lines highlighted. Plain HTML and
CSS, no scripts; every text from the file (students' code, ids, reasons) is escaped. A listed pair is for
the instructor to judge: nothing here or in the similarity command changes a grade.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

CSS = """
.sim .pair{margin:1rem 0 2rem}
.sim .cols{display:grid;grid-template-columns:1fr 1fr;gap:.75rem;margin:.4rem 0 1rem}
.sim .col{border:1px solid #ddd;border-radius:3px;overflow-x:auto;min-width:0}
.sim .head{background:#f3f3f3;padding:.2rem .5rem;font-size:.85rem;border-bottom:1px solid #ddd}
.sim pre{margin:0;padding:.3rem 0;font-size:.8rem;line-height:1.35}
.sim .ln{display:inline-block;width:2.5rem;padding-right:.5rem;text-align:right;color:#999;user-select:none}
.sim .line{display:block;padding:0 .5rem 0 0;white-space:pre}
.sim .hit{background:#fff3b0}
.sim .gap{color:#999}
.sim .score{font-weight:600}
"""


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _column(who: str, cell: str, side: Any) -> str:
    e = html.escape
    side = side if isinstance(side, dict) else {}
    rows = []
    for row in _list(side.get("lines")):
        if not isinstance(row, list) or len(row) < 3:
            continue
        number, text, matched = row[0], row[1], row[2]
        if number is None:
            rows.append('<span class="line gap"><span class="ln"></span>…</span>')
            continue
        rows.append(f'<span class="line{" hit" if matched is True else ""}"><span class="ln">{e(str(number))}</span>'
                    f'{e(str(text))}</span>')
    runs = ", ".join(f"{r[0]}-{r[1]}" if r[0] != r[1] else f"{r[0]}" for r in _list(side.get("matched"))
                     if isinstance(r, list) and len(r) == 2)
    return (f'<div class="col"><div class="head">{e(who)}: <code>{e(cell)}</code>'
            f'{f" (matching lines {e(runs)})" if runs else ""}</div><pre>{"".join(rows)}</pre></div>')


def _pair(index: int, pair: dict) -> str:
    e = html.escape
    a, b = str(pair.get("a", "?")), str(pair.get("b", "?"))
    head = (f'<h3 id="sim-{index}">{e(a)} ~ {e(b)}: <span class="score">{_num(pair.get("score")):.2f}</span></h3>'
            f'<p class="small">{_num(pair.get("fraction_a")):.0%} of {e(a)}\'s code is found in {e(b)}\'s, '
            f'{_num(pair.get("fraction_b")):.0%} of {e(b)}\'s in {e(a)}\'s '
            f'({e(str(pair.get("overlap_tokens", "?")))} tokens in common).</p>')
    views = []
    for view in _list(pair.get("views")):
        if not isinstance(view, dict):
            continue
        views.append(f'<div class="cols">{_column(a, str(view.get("a_cell", "?")), view.get("a"))}'
                     f'{_column(b, str(view.get("b_cell", "?")), view.get("b"))}</div>')
    return f'<div class="pair">{head}{"".join(views) or "<p>(no matching lines recorded)</p>"}</div>'


def section_html(out_dir: Path) -> str:
    """The report's similarity section from ``out_dir / "similarity.json"``; "" when there is none."""
    path = Path(out_dir) / "similarity.json"
    if not path.is_file():
        return ""
    e = html.escape
    title = "<h2>Similar answers</h2>"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        return (f'<section class="sim">{title}<p class="flag">{e(str(path))} could not be read ({e(str(exc))}): run '
                f"<code>bash course.sh similarity</code> again.</p></section>")
    try:
        return _section(data, title)
    except Exception as exc:  # noqa: BLE001 - a damaged file must not cost the rest of the report
        return (f'<section class="sim">{title}<p class="flag">{e(str(path))} holds something unexpected '
                f"({e(type(exc).__name__)}): run <code>bash course.sh similarity</code> again.</p></section>")


def _section(data: dict, title: str) -> str:
    e = html.escape
    pairs = [p for p in _list(data.get("pairs")) if isinstance(p, dict)]
    threshold = _num(data.get("threshold"))
    n = data.get("students_compared", "?")
    intro = (f'<p><strong>For the instructor to judge; no grade was changed.</strong> '
             f'{e(str(data.get("tool", "copydetect")))} compared the answer cells and the students\' own code cells '
             f'of {e(str(n))} students ({e(str(data.get("pairs_compared", "?")))} pairs) on {e(str(data.get("when", "?")))}; '
             f'the released code (signatures, placeholders, the course\'s own cells and helper calls) does not count. '
             f'Names, strings and comments are ignored, so renamed variables, reordered functions and added comments '
             f'do not hide a copy; short, natural code is also written alike by students who never met. '
             f'Score: {e(str(data.get("score", "")))}; listed at or above {threshold:.2f} '
             f'(noise threshold {e(str(data.get("noise_threshold", "?")))} and guarantee threshold '
             f'{e(str(data.get("guarantee_threshold", "?")))} characters of tokenized code). '
             f'Highest score not listed: {_num(data.get("highest_score_below_threshold")):.2f}.</p>')
    parts = [f'<section class="sim"><style>{CSS}</style>{title}{intro}']
    unread = [u for u in _list(data.get("could_not_be_read")) if isinstance(u, dict)]
    if unread:
        items = "".join(f"<li>{e(str(u.get('student', '?')))} ({e(str(u.get('notebook', '?')))}): could not be read: "
                        f"{e(str(u.get('why', '?')))}</li>" for u in unread)
        parts.append(f"<p>Not compared:</p><ul>{items}</ul>")
    empty = [str(s) for s in _list(data.get("without_own_code"))]
    if empty:
        parts.append(f'<p class="small">No code of their own beyond the release (compared, similar to no one): '
                     f'{e(", ".join(empty))}.</p>')
    if not pairs:
        parts.append(f"<p>No pair at or above {threshold:.2f}.</p></section>")
        return "".join(parts)
    rows = "".join(f'<tr><td><a href="#sim-{i}">{e(str(p.get("a", "?")))} ~ {e(str(p.get("b", "?")))}</a></td>'
                   f'<td>{_num(p.get("score")):.2f}</td><td>{_num(p.get("fraction_a")):.2f}</td>'
                   f'<td>{_num(p.get("fraction_b")):.2f}</td></tr>' for i, p in enumerate(pairs, 1))
    parts.append(f"<p>{len(pairs)} pair{'s' * (len(pairs) != 1)} at or above {threshold:.2f}, the most similar first:</p>"
                 f"<table><tr><th>pair</th><th>score</th><th>fraction of the first</th><th>fraction of the second</th>"
                 f"</tr>{rows}</table>")
    parts += [_pair(i, p) for i, p in enumerate(pairs, 1)]
    parts.append("</section>")
    return "".join(parts)
