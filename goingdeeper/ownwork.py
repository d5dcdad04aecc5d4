"""Is an answer the student's own code? Read statically from the cells' source, never run.

A point must mean the student wrote the thing. The course's package (``goingdeeper``) draws
figures, loads data and checks answers; an answer that calls, subclasses, imports, ``exec``\\ s or
reads the source of it is not the student's work, whatever it returns. Derivation exercises
(notebooks 01-03: backprop by hand in numpy) may not use torch either: its autograd would do the
derivation.

:func:`find_breaches` reads the source of the cells that ran (the set-up cell and the student's),
finds the definitions of the answer's names (the last ``def``, ``class`` or assignment of each),
and walks them and every function, class or value of the student's that they use, in any cell:

* a **breach** (the test scores 0, the message names the rule and the line): a name bound to the
  course's package (``scalar.run_torch``, ``class B(models.PreActBlock)``,
  ``inspect.getsource(goingdeeper.models)``), an ``import`` of it; with ``torch=False``, any use
  of torch;
* an **evasive form** (a flag for the instructor; the score is the tests'): what could reach code
  without naming it: ``exec``/``eval``/``compile``/``__import__``, ``importlib``, ``inspect``,
  ``sys.modules``, ``globals()``/``vars()``, ``__globals__``/``__builtins__``/``__subclasses__``,
  ``getattr`` with a computed name;
* a **likeness** to the course's code (a flag too): a function, class or run of statements that is,
  once docstrings, comments, annotations and every name are set aside, the same as one in the
  package's source (:func:`copied_from`). Only pieces of some size count (:data:`MIN_COPY_NODES`), so
  that ``return np.maximum(z, 0)`` is nobody's copy. It is not a breach: where the package does the
  same job in the natural way (a block of notebook 04 that training uses), two people can write the
  same code, and the instructor judges.

Both graders apply the same reading to the same text: in the student's kernel (plain nbgrader,
the student edition) the text is IPython's input history; in the grading command it is the
submission's cells, handed over by the grader (:data:`GRADER_HOOK`), in the grader's process.
A reader can be fooled by code built at run time: that is what the flags are for.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

#: The course's own package. Its modules are not the student's to call.
COURSE_PACKAGE = "goingdeeper"
#: The rooms no answer may import either: the instructor's commands and the grader (its references), where a
#: course checkout makes them importable.
OTHER_ROOMS = ("instructor", "autograder")

EVASIVE_CALLS = {"exec", "eval", "compile", "__import__", "globals", "vars", "locals"}
EVASIVE_NAMES = {"importlib", "inspect", "__builtins__", "builtins"}
EVASIVE_ATTRIBUTES = {"__globals__", "__builtins__", "__subclasses__", "__code__", "__dict__"}

RULE_COURSE = ("an answer may not call, subclass, import, exec or read the source of the course's own package "
               f"({COURSE_PACKAGE}): write it yourself")
RULE_TORCH = ("this exercise derives by hand, so its answer may not use torch (autograd would do the derivation): "
              "use numpy and math")


@dataclass(frozen=True)
class Breach:
    name: str  # the answer's name whose code (or a helper of it) breaks the rule
    rule: str
    line: int  # line in its cell
    text: str  # that line, stripped
    what: str  # what was used ('goingdeeper.scalar.run_torch', 'torch')
    via: str = ""  # '' when in the answer's own definition, else the helper or statement it relies on

    def message(self) -> str:
        where = "its cell" if not self.via else self.via
        return (f"{self.name} uses {self.what} (line {self.line} of {where}: {self.text}), but {self.rule}. "
                "This test gives its points to code that does not.")


@dataclass(frozen=True)
class Evasion:
    name: str
    line: int
    text: str
    what: str
    note: str = "which can reach code without naming it"

    def flag(self) -> str:
        return f"{self.name} uses {self.what}, {self.note} (line {self.line}: {self.text})"


@dataclass
class _Definition:
    node: ast.AST
    lines: list[str]  # its cell's lines


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    # IPython magics (%time, !ls) as the kernel would not see them: drop those lines and retry.
    kept = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return ast.parse(kept)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _bound_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _bound_names(element)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def _imports(node: ast.AST) -> list[tuple[str, str]]:
    """(bound name, dotted module path) for an import statement."""
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0]) for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [(a.asname or a.name, f"{node.module}.{a.name}") for a in node.names if a.name != "*"]
    return []


def _is_course(path: str) -> bool:
    return any(path == room or path.startswith(room + ".") for room in (COURSE_PACKAGE, *OTHER_ROOMS))


def _is_torch(path: str) -> bool:
    return path == "torch" or path.startswith("torch.")


class _Reader:
    def __init__(self, sources: Iterable[str]) -> None:
        self.imports: dict[str, str] = {}  # name -> dotted path, for names the cells bound by import (last wins)
        self.definitions: dict[str, _Definition] = {}  # top-level name -> its last definition
        # Top-level statements that may define names at run time (exec, globals()[...] = ...): they stand
        # for any name the answer uses that no def, class, assignment or import binds.
        self.dynamic: list[_Definition] = []
        for source in sources:
            tree = _parse(source)
            if tree is None:
                continue
            lines = source.splitlines()
            for node in _module_level(tree.body):  # in the order they run: the last binding of a name wins
                if _may_define_at_run_time(node):
                    self.dynamic.append(_Definition(node, lines))
                imported = dict(_imports(node))
                for name in self._defines(node):
                    self.definitions[name] = _Definition(node, lines)
                    path = imported.get(name)
                    if path is not None and (_is_course(path) or _is_torch(path)):
                        self.imports[name] = path
                    else:
                        self.imports.pop(name, None)

    @staticmethod
    def _defines(node: ast.AST) -> list[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return [node.name]
        if isinstance(node, ast.Assign):
            return [n for t in node.targets for n in _bound_names(t)]
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            return _bound_names(node.target)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return [name for name, _ in _imports(node)]
        return []


def _module_level(body: list) -> Iterable[ast.stmt]:
    """The statements that run at module level: the cell's, and those inside its if, try, with, for and
    while blocks (not inside functions or classes)."""
    for node in body:
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)):
            yield from _module_level([*getattr(node, "body", []), *getattr(node, "orelse", []),
                                      *getattr(node, "finalbody", []),
                                      *(stmt for h in getattr(node, "handlers", []) for stmt in h.body)])
            if isinstance(node, (ast.For, ast.AsyncFor)):  # the loop variable
                yield ast.copy_location(ast.Assign(targets=[node.target], value=node.iter), node)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        yield ast.copy_location(ast.Assign(targets=[item.optional_vars], value=item.context_expr),
                                                node)
        else:
            yield node


def _may_define_at_run_time(statement: ast.AST) -> bool:
    """Can a top-level statement bind global names that no def, class, assignment or import shows?

    ``exec``/``eval`` of code, and writes through the notebook's own namespace: ``globals()``, ``vars()`` and
    ``locals()`` without an argument, a function's ``__globals__``, a frame's ``f_globals``, ``sys.modules``,
    the builtins. Not ``vars(np)[...]`` or ``checks.__dict__``: those change another module, whose names an
    answer reaches through that module (and the grader flags the change)."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("exec", "eval") or (node.func.id in ("globals", "vars", "locals") and not node.args):
                return True
        if isinstance(node, ast.Name) and node.id in ("builtins", "__builtins__"):
            return True
        if isinstance(node, ast.Attribute) and node.attr in ("__globals__", "__builtins__", "f_globals"):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "modules" and _dotted(node.value) == ("sys", []):
            return True
    return False


BUILTIN_NAMES = frozenset(dir(__import__("builtins")))


def _local_names(function: ast.AST) -> set[str]:
    """Names a function binds itself (parameters, assignments, loop variables, its own imports and defs)."""
    names: set[str] = set()
    args = function.args  # type: ignore[attr-defined]
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None:
            names.add(a.arg)
    declared_global: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not function:
            names.add(node.name)
        elif isinstance(node, ast.arg) and node is not function:
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(name for name, _ in _imports(node))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names - declared_global


def _dotted(node: ast.AST) -> tuple[str, list[str]] | None:
    """``a.b.c`` as ('a', ['b', 'c']); None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, list(reversed(parts))
    return None


# -- copies of the course's code ------------------------------------------------------------------
#: The smallest piece (in syntax-tree nodes, names set aside) whose likeness to the package's code is flagged:
#: about four lines of real code. Measured (tests/test_ownwork.py): no answer in solutions/, no right or wrong
#: version in tests/wrong and no plain four-line train_step has a piece this large in common with the package.
MIN_COPY_NODES = 50
COPY_NOTE = "a copy of the course's code or a coincidence: compare them"
#: Runs of this many consecutive statements are compared too: a copy pasted into a function of one's own.
WINDOW = 3


_SET_ASIDE = frozenset({"ctx", "type_comment", "annotation", "returns", "decorator_list", "type_params", "kind"})
#: The field that holds an identifier, and its namespace: variables (and functions, classes, parameters) are
#: numbered apart from attributes and keywords, so that ``self.residual = residual`` stays a likeness when a
#: copier renames one and not the other.
_NAMES = {ast.Name: ("id", 0), ast.arg: ("arg", 0), ast.Attribute: ("attr", 1), ast.keyword: ("arg", 1),
          ast.FunctionDef: ("name", 0), ast.AsyncFunctionDef: ("name", 0), ast.ClassDef: ("name", 0),
          ast.alias: ("asname", 0)}


def _is_bare_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _canonical(nodes: list[ast.AST]) -> tuple[str, int]:
    """(canonical text, size in nodes) of a statement or a run of statements: what a copier changes for free
    is set aside (every name, numbered in order of first use; docstrings and bare strings; annotations and
    decorators)."""
    names: tuple[dict[str, str], dict[str, str]] = ({}, {})
    out: list[str] = []
    size = 0

    def walk(node: object) -> None:
        nonlocal size
        if isinstance(node, list):
            out.append("[")
            for item in node:
                if not _is_bare_string(item):  # type: ignore[arg-type]
                    walk(item)
            out.append("]")
        elif isinstance(node, ast.AST):
            size += 1
            out.append(type(node).__name__ + "(")
            renamed, space = _NAMES.get(type(node), ("", 0))
            for field, value in ast.iter_fields(node):
                if field in _SET_ASIDE:
                    continue
                if field == renamed and isinstance(value, str):
                    out.append(names[space].setdefault(value, f"{'na'[space]}{len(names[space])}"))
                else:
                    walk(value)
                out.append(",")
            out.append(")")
        else:
            out.append(repr(node))

    walk(list(nodes))
    return "".join(out), size


def _pieces(tree: ast.AST) -> Iterable[tuple[str, int, ast.AST]]:
    """(canonical text, size, first node) of every function and class and every run of WINDOW statements
    in ``tree``, of MIN_COPY_NODES nodes or more."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text, size = _canonical([node])
            if size >= MIN_COPY_NODES:
                yield text, size, node
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or len(body) < WINDOW or not isinstance(body[0], ast.stmt):
                continue
            for i in range(len(body) - WINDOW + 1):
                run = [b for b in body[i:i + WINDOW] if not _is_bare_string(b)]
                if len(run) < WINDOW:
                    continue
                text, size = _canonical(run)
                if size >= MIN_COPY_NODES:
                    yield text, size, run[0]


_PACKAGE_PIECES: dict[str, str] | None = None


def package_pieces() -> dict[str, str]:
    """Canonical text -> where it is (``goingdeeper.cifar.augment``), for the package's own source files
    (read as text: nothing is imported)."""
    global _PACKAGE_PIECES
    if _PACKAGE_PIECES is None:
        from pathlib import Path

        here = Path(__file__).resolve().parent
        pieces: dict[str, str] = {}
        for path in sorted(here.rglob("*.py")):
            tree = _parse(path.read_text(encoding="utf-8"))
            if tree is None:
                continue
            module = ".".join([COURSE_PACKAGE, *path.relative_to(here).with_suffix("").parts])
            owner: dict[int, str] = {}
            for top in ast.walk(tree):
                if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    for inner in ast.walk(top):
                        owner.setdefault(id(inner), f"{module}.{top.name}")
            for text, _, node in _pieces(tree):
                pieces.setdefault(text, owner.get(id(node), module))
        _PACKAGE_PIECES = pieces
    return _PACKAGE_PIECES


def copied_from(node: ast.AST) -> tuple[str, ast.AST] | None:
    """(where in the package, first copied node) when ``node`` holds a copy of the package's code."""
    pieces = package_pieces()
    for text, _, first in _pieces(node):
        if text in pieces:
            return pieces[text], first
    return None


def find_breaches(sources: Sequence[str], names: Sequence[str], *, torch: bool = True,
                  allow: Sequence[str] = (), copies: bool = True) -> tuple[list[Breach], list[Evasion], list[str]]:
    """(breaches, evasive forms, names not found) for the answer made of ``names``, read from ``sources``.

    ``sources``: the cells that ran, in order (the set-up cell among them). ``allow``: dotted paths
    of the course's package this answer may use (``goingdeeper.cifar.normalize``: plumbing that is
    not an exercise). ``copies``: look for copies of the package's code too. Each breach and evasion is
    reported once per line.
    """
    reader = _Reader(sources)
    breaches: list[Breach] = []
    evasions: list[Evasion] = []
    missing = [n for n in names if n not in reader.definitions]
    seen_definitions: set[int] = set()
    reported: set[tuple[str, int, str]] = set()
    # (answer name, definition to read)
    queue: list[tuple[str, _Definition]] = [(n, reader.definitions[n]) for n in names if n in reader.definitions]
    queue += [(n, d) for n in missing for d in reader.dynamic]

    def allowed(path: str) -> bool:
        return any(path == a or path.startswith(a + ".") for a in allow)

    while queue:
        answer, definition = queue.pop(0)
        if id(definition.node) in seen_definitions:
            continue
        seen_definitions.add(id(definition.node))
        lines = definition.lines
        own = _Reader._defines(definition.node)
        via = "" if answer in own else (f"the cell of {own[0]}, which it uses" if own else
                                        "a cell that defines names while it runs")

        def text(node: ast.AST) -> tuple[int, str]:
            line = getattr(node, "lineno", 1)
            return line, (lines[line - 1].strip() if 0 < line <= len(lines) else "")[:200]

        def breach(node: ast.AST, rule: str, what: str) -> None:
            line, code = text(node)
            if (answer, line, rule) not in reported:
                reported.add((answer, line, rule))
                breaches.append(Breach(answer, rule, line, code, what, via))

        def evasion(node: ast.AST, what: str, note: str = "") -> None:
            line, code = text(node)
            if (answer, line, "evasion") not in reported:
                reported.add((answer, line, "evasion"))
                evasions.append(Evasion(answer, line, code, what, *([note] if note else [])))

        def global_path(node: ast.AST, local: set[str]) -> str | None:
            """The dotted path a global name (with its attributes) stands for, when bound by an import."""
            dotted = _dotted(node)
            if dotted is None or dotted[0] in local or dotted[0] not in reader.imports:
                return None
            return ".".join([reader.imports[dotted[0]], *dotted[1]])

        def visit(node: ast.AST, local: set[str]) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for default in [*node.args.defaults, *node.args.kw_defaults]:
                    if default is not None:
                        visit(default, local)
                if not isinstance(node, ast.Lambda):
                    for decorator in node.decorator_list:
                        visit(decorator, local)
                    if node.returns is not None:
                        visit(node.returns, local)
                inner = local | _local_names(node)
                for child in (node.body if isinstance(node.body, list) else [node.body]):
                    visit(child, inner)
                return
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for _, path in _imports(node):
                    if _is_course(path) and not allowed(path):
                        breach(node, RULE_COURSE, f"an import of {path}")
                    elif _is_torch(path) and not torch:
                        breach(node, RULE_TORCH, "torch")
                    elif path.split(".")[0] in ("importlib", "inspect", "builtins"):
                        evasion(node, f"an import of {path}")
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                        node.module.split(".")[0] in ("importlib", "inspect", "builtins"):
                    evasion(node, f"an import from {node.module}")
                return
            if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(getattr(node, "ctx", None), ast.Load):
                path = global_path(node, local)
                if path is not None:
                    if _is_course(path) and not allowed(path):
                        breach(node, RULE_COURSE, path)
                        return
                    if _is_torch(path) and not torch:
                        breach(node, RULE_TORCH, path)
                        return
                    if _is_course(path) or _is_torch(path):
                        return
                if isinstance(node, ast.Name):
                    if node.id not in local:
                        if node.id in EVASIVE_NAMES:
                            evasion(node, node.id)
                        elif node.id in reader.definitions and node.id not in reader.imports:
                            queue.append((answer, reader.definitions[node.id]))
                        elif node.id not in reader.imports and node.id not in BUILTIN_NAMES:
                            queue.extend((answer, d) for d in reader.dynamic)
                    return
                if node.attr in EVASIVE_ATTRIBUTES or (node.attr == "modules" and _dotted(node.value) == ("sys", [])):
                    evasion(node, f".{node.attr}")
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) and func.id not in local else None
                if called in EVASIVE_CALLS:
                    evasion(node, f"{called}()")
                if called == "getattr" and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
                    evasion(node, "getattr with a computed name")
            for child in ast.iter_child_nodes(node):
                visit(child, local)

        node = definition.node
        if copies:
            copy = copied_from(node)
            if copy is not None:
                evasion(copy[1], f"the same code as {copy[0]} with its names changed", COPY_NOTE)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *(k.value for k in node.keywords), *node.decorator_list]:
                visit(base, set())
            class_local = {n for stmt in node.body for n in _Reader._defines(stmt)}
            for stmt in node.body:
                # Methods see module globals, not the class's names; the class body sees both.
                visit(stmt, set() if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else class_local)
        else:
            visit(node, set())
    return breaches, evasions, missing


# -- where the text comes from ---------------------------------------------------------------------
class GraderHook:
    """Set by the grading command in its own process: the submission's cells and a place for flags."""

    def __init__(self, sources: Callable[[], list[str]], flag: Callable[[str], None]) -> None:
        self.sources = sources
        self.flag = flag


#: None in the student's kernel (the text is IPython's input history); the grading command sets it.
GRADER_HOOK: GraderHook | None = None


def _kernel_sources() -> list[str] | None:
    """The kernel's input history, less the course's test cells (they open with ``own_work(...)``): the
    grading command reads the student's cells only, and a test's own names must not stand for an answer's."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "history_manager", None) is None:
        return None
    return [s for s in shell.history_manager.input_hist_parsed if s and not _is_test_cell(s)]


def _kernel_namespace() -> dict:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _is_test_cell(source: str) -> bool:
    tree = _parse(source)
    if tree is None:
        return False
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                isinstance(node.value.func, ast.Name) and node.value.func.id == "own_work":
            return True
    return False


def check_own_work(names: Sequence[str], *, torch: bool = True, allow: Sequence[str] = ()) -> None:
    """Raise CheckFailed when the answer defining ``names`` breaks the rules (see the module's docstring)."""
    __tracebackhide__ = True
    from .checks import CheckFailed

    hook = GRADER_HOOK
    sources = hook.sources() if hook is not None else _kernel_sources()
    if sources is None:  # not in a notebook (a script, a test of the package): nothing to read
        return
    # Likenesses are flags for the instructor: looked for only where there is a report to carry them.
    breaches, evasions, missing = find_breaches(sources, names, torch=torch, copies=hook is not None,
                                          allow=[a if _is_course(a) else f"{COURSE_PACKAGE}.{a}" for a in allow])
    if hook is not None:
        for e in evasions:
            hook.flag(e.flag())
        for name in missing:
            hook.flag(f"{name} is not defined by a def, class or assignment the grader can read")
        for b in breaches:  # the instructor sees it in the report, apart from ordinary failures
            hook.flag(f"not the student's own work: {b.name} uses {b.what} (line {b.line}: {b.text})")
    if breaches:
        raise CheckFailed(breaches[0].message())
    if hook is None:
        undefined = [n for n in names if n not in _kernel_namespace()]
        if undefined:  # the answer cell is unanswered or has not run: say so, not a bare NameError later
            raise CheckFailed(f"{', '.join(undefined)} {'is' if len(undefined) == 1 else 'are'} not defined yet: "
                              "write the answer cell above this test and run it (Shift+Enter), then run this test.")
