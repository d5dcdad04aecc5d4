"""Pack wrong implementations into as few submissions as the notebook allows.

Grading costs a kernel per submission, so wrong versions of *unrelated* answers
share one: a submission may hold wrong versions of answers A and B when
neither's test cell can run the other's code. What a test cell can run is read
from the notebook: the names each code cell defines and uses, followed from
cell to cell (a test of ``mlp_forward`` reaches ``relu_forward`` through the
provided ``ACTIVATIONS`` table). Packing can only be too cautious: two answers
that might interact never share a submission.
"""

from __future__ import annotations

import ast
from typing import Any, Sequence

import nbformat


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines at its top level, names it uses but does not bind anywhere in itself)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            defined.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in [*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg] if a is not None}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return defined, used - bound - defined


def reach(notebook: nbformat.NotebookNode) -> dict[str, set[str]]:
    """For every graded test cell: the answer cells (grade ids) whose code it may run, its own included.

    A name a cell uses is taken from the nearest cell above that defines it (the order the notebook runs in);
    a name no cell above defines, from the last cell that does (a method of a class given early calls a
    function the student writes later; the own-work check reads it the same way).
    """
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    meta = [c.metadata.get("nbgrader", {}) for c in cells]
    ids = [m.get("grade_id") or f"cell{i}" for i, m in enumerate(meta)]
    answers = {ids[i] for i, m in enumerate(meta) if m.get("solution")}
    names = [_names(cell.source) for cell in cells]
    last_owner = {name: cid for cid, (defined, _) in zip(ids, names) for name in defined}
    owner: dict[str, str] = {}
    edges: dict[str, set[str]] = {}
    for cid, (defined, used) in zip(ids, names):
        edges[cid] = {owner.get(n, last_owner.get(n)) for n in used if n in owner or n in last_owner}
        for name in defined:
            owner[name] = cid

    def closure(start: set[str]) -> set[str]:
        seen, stack = set(start), list(start)
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return {cid: closure({cid}) & answers | ({cid[5:]} & answers)
            for cid, m in zip(ids, meta) if m.get("grade")}


def pack(wrongs: Sequence[Any], notebook: nbformat.NotebookNode) -> list[list[int]]:
    """Groups of indices into ``wrongs`` (each has ``.answer``) that can be graded in one submission."""
    reached = reach(notebook)
    groups: list[list[int]] = []
    for i, wrong in enumerate(wrongs):
        mine = reached.get(f"test_{wrong.answer}", {wrong.answer})
        for group in groups:
            others = [wrongs[j].answer for j in group]
            if wrong.answer in others:
                continue
            if any(other in mine or wrong.answer in reached.get(f"test_{other}", {other}) for other in others):
                continue
            group.append(i)
            break
        else:
            groups.append([i])
    return groups
