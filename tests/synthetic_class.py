"""A synthetic class with planted copies, for the similarity report (instructor/similarity.py).

``make_class`` builds one notebook per student from the course's solution notebook:

* **honest students** pick, for every answer cell and with a seeded ``random.Random``, one variant among
  the course's own solution (its ``### BEGIN/END SOLUTION`` markers removed), the right and wrong versions
  of ``tests/wrong`` for that answer, and, for notebook 01, the further honest versions of :data:`HONEST`
  below (hand-written, independent, some of them wrong, as honest students' work is). Some also add a
  scratch cell of their own (no nbgrader metadata);
* **planted copies** take one honest student's notebook and transform every answer cell (and every cell of
  their own) they copied: rename the local variables and parameters of functions (``ast``, scope-aware;
  never a function's own name, a global, a module, an attribute or a builtin), reorder the top-level
  functions of a cell, add comments and blank lines. Each transformation keeps the cell's behaviour and is
  checked (compiles; the renaming is undone exactly by its inverse; every function reads the same globals).

Student ids are ``s01``, ``s02``, ... for everyone, shuffled, so a copier's id says nothing.

    from synthetic_class import make_class, submit_all
    klass = make_class(honest=30, planted=6, seed=0)
    submit_all(course_root / "autograder" / "submitted", klass["notebooks"], klass["assignment"], klass["name"])
"""

from __future__ import annotations

import ast
import builtins
import random
import symtable
from pathlib import Path

import nbformat

from instructor.scratch import ROOT, answer_ids, replace_cell
from wrong import by_assignment, right_by_assignment

ASSIGNMENT = "01_computational_graphs"

# What a planted copy does to the cells it copied; planted copy i gets TRANSFORMS[i % len(TRANSFORMS)].
TRANSFORMS = [
    ("rename", "reorder", "comments"),
    ("rename",),
    ("reorder", "comments"),
    ("rename", "comments"),
    ("comments",),
    ("rename", "reorder"),
]

# -- honest versions for notebook 01, written for this file ----------------------------------------------
# Independent student code: each is how someone who did not see the others might write the answer. Not all
# of them are right (the labels say which are not).
HONEST: dict[str, list[tuple[str, str]]] = {
    "sin_graph": [
        ("named gradient, returned three times", '''
def sin_graph(x, y):
    z = x + y
    L = math.sin(z)
    grad = math.cos(z)
    return z, L, grad, grad, grad
'''),
        ("numpy, converted to floats", '''
def sin_graph(x, y):
    # forward
    z = x + y
    L = np.sin(z)
    # backward: dL/dz = cos(z), and the sum passes it on unchanged
    dz = np.cos(z)
    dx = dz
    dy = dz
    return float(z), float(L), float(dz), float(dx), float(dy)
'''),
        ("one line", '''
def sin_graph(x, y):
    return x + y, math.sin(x + y), math.cos(x + y), math.cos(x + y), math.cos(x + y)
'''),
        ("wrong: multiplies the gradient by the inputs", '''
def sin_graph(x, y):
    s = x + y
    out = math.sin(s)
    d = math.cos(s)
    dx = d * x
    dy = d * y
    return s, out, d, dx, dy
'''),
    ],
    "lecture_forward": [
        ("q reused", '''
def lecture_forward(x, y, z):
    q = x + y
    return q, q * z
'''),
        ("named nodes, a tuple", '''
def lecture_forward(x, y, z):
    add_node = x + y
    mul_node = add_node * z
    return (add_node, mul_node)
'''),
        ("inline", '''
def lecture_forward(x, y, z):
    return x + y, (x + y) * z
'''),
        ("wrong: f = x * z + y", '''
def lecture_forward(x, y, z):
    q = x + y
    f = x * z + y
    return q, f
'''),
    ],
    "lecture_local_grads": [
        ("named, with comments", '''
def lecture_local_grads(x, y, z):
    q = x + y
    df_dq = z      # d(q*z)/dq
    df_dz = q      # d(q*z)/dz
    dq_dx = 1.0
    dq_dy = 1.0
    return df_dq, df_dz, dq_dx, dq_dy
'''),
        ("finite differences", '''
def lecture_local_grads(x, y, z):
    h = 1e-6
    q = x + y
    df_dq = ((q + h) * z - q * z) / h
    df_dz = (q * (z + h) - q * z) / h
    dq_dx = ((x + h + y) - (x + y)) / h
    dq_dy = ((x + y + h) - (x + y)) / h
    return df_dq, df_dz, dq_dx, dq_dy
'''),
        ("from f by division (fails when x + y or z is 0)", '''
def lecture_local_grads(x, y, z):
    f = (x + y) * z
    return f / (x + y), f / z, 1, 1
'''),
    ],
    "lecture_chain": [
        ("chain rule by hand", '''
def lecture_backprop(x, y, z):
    q = x + y
    f = q * z
    # chain rule by hand
    grad_q = z
    grad_z = q
    grad_x = grad_q * 1.0
    grad_y = grad_q * 1.0
    return f, grad_x, grad_y, grad_z
'''),
        ("indexes the local gradients", '''
def lecture_backprop(x, y, z):
    _, f = lecture_forward(x, y, z)
    local = lecture_local_grads(x, y, z)
    upstream = local[0]
    return f, upstream * local[2], upstream * local[3], local[1]
'''),
        ("closed form", '''
def lecture_backprop(x, y, z):
    return (x + y) * z, z, z, x + y
'''),
    ],
    "engine_add_mul": [
        ("builds the node, then sets its fields", '''
def add(a, b):
    v = Value(a.data + b.data)
    v.parents = (a, b)
    v.local_grads = (1.0, 1.0)
    v.op = "+"
    return v


def mul(a, b):
    v = Value(a.data * b.data)
    v.parents = (a, b)
    v.local_grads = (b.data, a.data)
    v.op = "*"
    return v
'''),
        ("positional arguments", '''
def add(a, b):
    total = a.data + b.data
    return Value(total, (a, b), (1.0, 1.0), "+")


def mul(a, b):
    product = a.data * b.data
    return Value(product, (a, b), (b.data, a.data), "*")
'''),
        ("mul first, a shared helper", '''
def _node(value, a, b, ga, gb, op):
    return Value(value, parents=[a, b], local_grads=[ga, gb], op=op)


def mul(a, b):
    return _node(a.data * b.data, a, b, b.data, a.data, "*")


def add(a, b):
    return _node(a.data + b.data, a, b, 1.0, 1.0, "+")
'''),
    ],
    "engine_sin_relu": [
        ("branches in relu", '''
def sin(a):
    y = math.sin(a.data)
    dy = math.cos(a.data)
    return Value(y, parents=(a,), local_grads=(dy,), op="sin")


def relu(a):
    if a.data > 0:
        return Value(a.data, parents=(a,), local_grads=(1.0,), op="relu")
    return Value(0.0, parents=(a,), local_grads=(0.0,), op="relu")
'''),
        ("numpy and a comparison as a number", '''
def sin(a):
    return Value(np.sin(a.data), [a], [np.cos(a.data)], "sin")


def relu(a):
    positive = float(a.data > 0)
    return Value(a.data * positive, [a], [positive], "relu")
'''),
        ("wrong: relu's gradient is its output", '''
def sin(a):
    out = Value(math.sin(a.data), parents=(a,), op="sin")
    out.local_grads = (math.cos(a.data),)
    return out


def relu(a):
    r = max(0.0, a.data)
    return Value(r, parents=(a,), local_grads=(r,), op="relu")
'''),
    ],
    "engine_topological_order": [
        ("Kahn's algorithm on the reversed edges", '''
def topological_order(root):
    # collect every node first
    nodes, todo, seen = [], [root], set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        nodes.append(n)
        todo.extend(n.parents)
    # how many children still wait for each node
    waiting = {id(n): 0 for n in nodes}
    for n in nodes:
        for p in n.parents:
            waiting[id(p)] += 1
    ready, out = [root], []
    while ready:
        n = ready.pop()
        out.append(n)
        for p in n.parents:
            waiting[id(p)] -= 1
            if waiting[id(p)] == 0:
                ready.append(p)
    out.reverse()
    return out
'''),
        ("iterators on an explicit path", '''
def topological_order(root):
    result = []
    done = {id(root)}
    path = [(root, iter(root.parents))]
    while path:
        node, parents = path[-1]
        nxt = next(parents, None)
        if nxt is None:
            path.pop()
            result.append(node)
        elif id(nxt) not in done:
            done.add(id(nxt))
            path.append((nxt, iter(nxt.parents)))
    return result
'''),
        ("wrong: breadth-first, reversed (not an order when paths differ in length)", '''
def topological_order(root):
    queue = [root]
    seen = {id(root)}
    i = 0
    while i < len(queue):
        for p in queue[i].parents:
            if id(p) not in seen:
                seen.add(id(p))
                queue.append(p)
        i += 1
    return queue[::-1]
'''),
    ],
    "engine_backward": [
        ("indexes the parents", '''
def backward(root):
    order = topological_order(root)
    root.grad = 1.0
    for node in order[::-1]:
        for i in range(len(node.parents)):
            node.parents[i].grad += node.local_grads[i] * node.grad
'''),
        ("a list, then plain additions", '''
def backward(root):
    nodes = list(reversed(topological_order(root)))
    nodes[0].grad = 1
    for n in nodes:
        for p, g in zip(n.parents, n.local_grads):
            p.grad = p.grad + g * n.grad
'''),
        ("wrong: forgets to seed the root's gradient", '''
def backward(root):
    for v in reversed(topological_order(root)):
        for parent, d in zip(v.parents, v.local_grads):
            parent.grad += d * v.grad
'''),
    ],
}

# Scratch cells some honest students add (no nbgrader metadata): trying their code out.
SCRATCH = [
    "print(sin_graph(1.0, 2.0))",
    "lecture_forward(-2.0, 5.0, -4.0)",
    "a = Value(3.0)\nb = Value(-1.0)\nprint(add(a, b), mul(a, b))",
    "n = relu(Value(-0.5))\nn.data, n.local_grads",
    "for k in [0.0, 1.0, 2.0]:\n    print(k, sin_graph(k, k))",
    "t = Value(2.0) * Value(3.0) + Value(1.0)\nbackward(t)\n[v.grad for v in topological_order(t)]",
]

COMMENTS = ["# compute the forward value", "# chain rule", "# TODO: double-check this", "# from the lecture",
            "# this was tricky", "# local gradient", "# see the notes", "# step 2", "# works now", "# careful here"]
SYNONYMS = {"x": "u", "y": "w", "z": "t", "q": "s", "f": "out", "L": "loss", "root": "top", "node": "cur",
            "parent": "par", "parents": "pars", "order": "result", "visited": "seen", "stack": "todo",
            "expanded": "ready", "local": "lg", "a": "lhs", "b": "rhs", "v": "val", "n": "nd", "p": "pp"}
STYLES = ["{}_", "my_{}", "{}_val", "{}2", "tmp_{}"]


# -- the class ----------------------------------------------------------------------------------------
def solution_notebook(assignment: str = ASSIGNMENT) -> tuple[nbformat.NotebookNode, str]:
    """The course's solution notebook of ``assignment`` and its file name."""
    (path,) = sorted((ROOT / "solutions" / assignment).glob("*.ipynb"))
    return nbformat.read(path, as_version=4), path.name


def without_markers(source: str) -> str:
    """A solution cell as a student would leave it: the ``### BEGIN/END SOLUTION`` lines removed."""
    return "\n".join(line for line in source.split("\n")
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def variants(assignment: str = ASSIGNMENT) -> dict[str, list[tuple[str, str]]]:
    """{answer grade id: [(label, source), ...]}: every version an honest student may hand in."""
    solution, _ = solution_notebook(assignment)
    cells = {c.metadata.nbgrader.grade_id: c for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    out: dict[str, list[tuple[str, str]]] = {}
    for gid in answer_ids(solution):
        pool = [("solution", without_markers(cells[gid].source))]
        pool += [(f"right: {r.how}", r.source.strip()) for r in right_by_assignment().get(assignment, [])
                 if r.answer == gid]
        pool += [(f"wrong: {w.mistake}", w.source.strip()) for w in by_assignment().get(assignment, [])
                 if w.answer == gid]
        if assignment == ASSIGNMENT:
            pool += [(f"honest: {label}", text.strip()) for label, text in HONEST.get(gid, [])]
        out[gid] = pool
    return out


def make_class(assignment: str = ASSIGNMENT, honest: int = 30, planted: int = 6, seed: int = 0) -> dict:
    """A class of ``honest`` independent students and ``planted`` copiers, each copying one honest student.

    Returns {"assignment", "name" (the notebook's file name), "notebooks": {student: NotebookNode},
    "honest": [ids], "planted": [(copier, original)], "variants": {student: {grade id: label}},
    "transforms": {copier: (transformation, ...)}}.
    """
    rng = random.Random(seed)
    solution, name = solution_notebook(assignment)
    pool = variants(assignment)
    width = max(2, len(str(honest + planted)))
    ids = [f"s{i:0{width}d}" for i in range(1, honest + planted + 1)]
    rng.shuffle(ids)
    honest_ids, copier_ids = sorted(ids[:honest]), ids[honest:]
    notebooks: dict[str, nbformat.NotebookNode] = {}
    chosen: dict[str, dict[str, str]] = {}
    for student in honest_ids:
        nb, chosen[student] = solution, {}
        for gid, options in pool.items():
            label, text = rng.choice(options)
            nb = replace_cell(nb, gid, text)
            chosen[student][gid] = label
        if rng.random() < 0.3:  # a scratch cell of their own, after one of the answers
            nb = _add_scratch(nb, rng.choice(list(pool)), rng.choice(SCRATCH))
        notebooks[student] = nb
    originals = rng.sample(honest_ids, planted) if planted <= honest else [rng.choice(honest_ids) for _ in ids[honest:]]
    pairs, transforms = [], {}
    for i, (copier, original) in enumerate(zip(copier_ids, originals)):
        how = TRANSFORMS[i % len(TRANSFORMS)]
        style = rng.choice(STYLES)
        nb = nbformat.from_dict(notebooks[original])
        names, memory = _notebook_names(nb), {}
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.cell_type == "code" and (gid in pool or "copied" in cell.metadata.get("synthetic", {})):
                cell.source = transform(cell.source, how, rng, style, names, memory)
        notebooks[copier] = nb
        chosen[copier] = {gid: f"copy of {original} ({'+'.join(how)})" for gid in pool}
        pairs.append((copier, original))
        transforms[copier] = how
    return {"assignment": assignment, "name": name, "notebooks": dict(sorted(notebooks.items())),
            "honest": honest_ids, "planted": pairs, "variants": chosen, "transforms": transforms}


def submit_all(submitted: Path, notebooks: dict[str, nbformat.NotebookNode], assignment: str, name: str) -> None:
    """Write every notebook to ``submitted/<student>/<assignment>/<name>`` (the layout grade.py reads)."""
    for student, nb in notebooks.items():
        folder = Path(submitted) / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / name)


def _add_scratch(nb: nbformat.NotebookNode, after: str, source: str) -> nbformat.NotebookNode:
    copy = nbformat.from_dict(nb)
    index = next(i for i, c in enumerate(copy.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after)
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["synthetic"] = {"copied": True}  # marks the student's own cell, so a copier transforms it too
    copy.cells.insert(index + 1, cell)
    return copy


def _notebook_names(nb: nbformat.NotebookNode) -> set[str]:
    """Every name the notebook's code cells define or use, and the builtins: a new name must be none of them."""
    names = set(dir(builtins))
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return names


# -- the transformations (each keeps the cell's behaviour) ---------------------------------------------
def transform(source: str, how: tuple[str, ...], rng: random.Random, style: str = "{}_",
              avoid: set[str] | None = None, memory: dict[str, str] | None = None) -> str:
    """``source`` with the transformations ``how`` ("rename", "reorder", "comments") applied and checked.

    The text is edited in place (names replaced where they stand, functions moved whole), so the copy keeps
    the original's layout; the same changes made to the original's syntax tree must give the copy's tree.
    """
    try:
        expected = ast.parse(source)
    except SyntaxError:  # a cell that does not parse is copied as it is
        return source
    text = source
    if "rename" in how:
        edits = rename_locals(expected, source, rng, style, avoid or set(dir(builtins)), memory)
        text = _apply_edits(source, edits)
    if "reorder" in how:
        text, order = reorder_functions(text, rng)
        if order:
            where = [i for i, node in enumerate(expected.body) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
            functions = [expected.body[i] for i in where]
            for slot, k in zip(where, order):
                expected.body[slot] = functions[k]
    if ast.dump(ast.parse(text)) != ast.dump(expected):
        raise AssertionError(f"the transformed cell is not the transformed tree:\n{source}\n---\n{text}")
    check_same_behaviour(source, text)
    if "comments" in how:
        commented = add_comments(text, rng)
        if ast.dump(ast.parse(commented)) != ast.dump(expected):
            raise AssertionError("adding comments changed the code")
        text = commented
    return text


def rename_locals(tree: ast.Module, source: str, rng: random.Random, style: str, avoid: set[str],
                  memory: dict[str, str] | None = None) -> list[tuple[int, int, int, str]]:
    """Rename, in every top-level function of ``tree`` (parsed from ``source``), its parameters and local
    variables, consistently across the function's body and the scopes nested in it. A name is renamed only
    where Python's own scoping (``symtable``) says that it is local or a closure's variable in every scope of
    the function that uses it: never the function's own name, a nested function's or class's name, a global,
    a module, an attribute, a builtin or a keyword argument's name (nor ``_``). ``memory`` (old -> new) carries
    a copier's renamings from cell to cell. ``tree`` is renamed; returns the text's edits
    (line, start byte, end byte, new name)."""
    memory = {} if memory is None else memory
    top = symtable.symtable(source, "<cell>", "exec")
    tables = {(t.get_name(), t.get_lineno()): t for t in top.get_children() if t.get_type() == "function"}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | avoid
    used |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    edits: list[tuple[int, int, int, str]] = []
    for fn in tree.body:
        table = tables.get((getattr(fn, "name", None), getattr(fn, "lineno", None)))
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.decorator_list or table is None:
            continue
        good: set[str] = set()
        bad: set[str] = set()

        def visit(t: symtable.SymbolTable) -> None:
            for s in t.get_symbols():
                if s.is_global() or s.is_declared_global() or s.is_imported():
                    bad.add(s.get_name())
                elif s.is_local() or s.is_free() or s.is_parameter():
                    good.add(s.get_name())
            for child in t.get_children():
                visit(child)

        visit(table)
        nested = {n.name for n in ast.walk(fn) if n is not fn
                  and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        local = {n for n in good - bad - nested - {fn.name, "_"} if n.isidentifier()}
        mapping: dict[str, str] = {}
        for old in sorted(local):
            new = memory.get(old)  # the copier renames a name the same way in every function
            if new is None or new in used or new in mapping.values():
                new = SYNONYMS.get(old) if rng.random() < 0.5 else None
                if not new or new in used:
                    new = style.format(old)
                while new in used or new in mapping.values() or new in memory.values():
                    new += "_"
                memory.setdefault(old, new)
            mapping[old] = new
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id in mapping:
                edits.append((node.lineno, node.col_offset, node.end_col_offset, mapping[node.id]))
                node.id = mapping[node.id]
            elif isinstance(node, ast.arg) and node.arg in mapping:
                edits.append((node.lineno, node.col_offset, node.col_offset + len(node.arg.encode()), mapping[node.arg]))
                node.arg = mapping[node.arg]
    return edits


def _apply_edits(source: str, edits: list[tuple[int, int, int, str]]) -> str:
    """``source`` with each (line, start byte, end byte) replaced by its new text (ast's offsets are bytes)."""
    lines = source.split("\n")
    for line, start, end, new in sorted(edits, reverse=True):
        raw = lines[line - 1].encode()
        lines[line - 1] = (raw[:start] + new.encode() + raw[end:]).decode()
    return "\n".join(lines)


def reorder_functions(source: str, rng: random.Random) -> tuple[str, list[int]]:
    """The top-level functions of ``source`` in another order, moved whole (with the comments above each),
    when they stand together (nothing runs between them). Returns the text and the order (empty: unchanged)."""
    tree = ast.parse(source)
    where = [i for i, node in enumerate(tree.body) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(where) < 2 or where != list(range(where[0], where[-1] + 1)):
        return source, []
    functions = [tree.body[i] for i in where]
    lines = source.split("\n")
    starts = [(fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno) - 1 for fn in functions]
    ends = [fn.end_lineno for fn in functions]
    segments = [lines[starts[0]:ends[0]]] + [lines[ends[i - 1]:ends[i]] for i in range(1, len(functions))]
    order = list(range(len(functions)))
    while order == list(range(len(functions))):
        rng.shuffle(order)
    body = []
    for k in order:
        segment = segments[k]
        while segment and not segment[0].strip():
            segment = segment[1:]
        body.append("\n".join(segment))
    text = "\n".join(lines[:starts[0]] + ["\n\n\n".join(body)] + lines[ends[-1]:])
    return text, order


def add_comments(source: str, rng: random.Random) -> str:
    """Comment lines and blank lines before some statements, and comments after some one-line statements."""
    tree = ast.parse(source)
    lines = source.split("\n")
    before: dict[int, list[str]] = {}
    after: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        line = node.lineno - 1
        indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
        if rng.random() < 0.35:
            before.setdefault(line, []).append(indent + rng.choice(COMMENTS))
        if rng.random() < 0.15:
            before.setdefault(line, []).insert(0, "")
        if (node.end_lineno == node.lineno and not hasattr(node, "body") and rng.random() < 0.2
                and not lines[line].rstrip().endswith("\\")):
            after.add(line)
    out = []
    for i, line in enumerate(lines):
        out += before.get(i, [])
        out.append(line + ("  " + rng.choice(COMMENTS) if i in after else ""))
    return "\n".join(out)


def check_same_behaviour(before: str, after: str) -> None:
    """The transformed cell compiles, defines the same functions and every function reads the same globals."""
    compile(after, "<transformed cell>", "exec")

    def shape(text: str) -> dict[str, tuple[str, ...]]:
        out = {}

        def walk(table: symtable.SymbolTable, prefix: str) -> None:
            for child in table.get_children():
                name = f"{prefix}{child.get_name()}"
                if child.get_type() == "function":
                    out[name] = tuple(sorted(s.get_name() for s in child.get_symbols() if s.is_global()))
                walk(child, name + ".")

        walk(symtable.symtable(text, "<cell>", "exec"), "")
        return out

    if shape(before) != shape(after):
        raise AssertionError(f"the transformation changed what the functions read:\n{before}\n---\n{after}")
