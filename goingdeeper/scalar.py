"""The oracle for notebook 01's scalar autodiff engine.

A *program* is a random scalar expression written as a list of steps over
numbered registers, so the same expression can be run three ways: with the
student's ``Value`` engine, with the reference engine in ``autograder/``, and
with torch autograd in float64. The checks compare values and gradients and
say, in words, which input's gradient is off, by how much, on which
expression.

The engine the checks expect (notebook 01 builds it):

* ``Value(data, parents=(), local_grads=(), op="", label="")`` with attributes
  ``data`` (float), ``grad`` (float, starts at 0), ``parents`` (tuple of
  Values) and ``local_grads`` (tuple of floats: d(self)/d(parent), one per
  parent, in the same order);
* ``add(a, b)``, ``mul(a, b)``, ``sin(a)``, ``relu(a)``: each returns a new
  Value recording its parents and local gradients; ReLU'(0) is taken as 0, as
  torch does;
* ``topological_order(root)``: every node reachable from ``root`` once,
  parents before children, ``root`` last;
* ``backward(root)``: sets ``root.grad = 1`` and accumulates ``grad`` into
  every node, in reverse topological order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .checks import CheckFailed, as_number, beside, call, expect_close, expect_true, no_warnings, read_path, unpack

__all__ = [
    "Engine",
    "Program",
    "Step",
    "check_backward",
    "backward_hint",
    "check_node",
    "check_topological_order",
    "collect_nodes",
    "check_lecture",
    "check_sin_graph",
    "fit_tiny_mlp",
    "plot_tiny_mlp",
    "train_tiny_mlp",
    "two_moons",
    "long_chain_program",
    "random_program",
    "run_engine",
    "run_torch",
]

UNARY = ("sin", "relu")
BINARY = ("add", "mul")


@dataclass(frozen=True)
class Step:
    """One step of a program: ``kind`` is 'input', 'const', 'add', 'mul', 'sin' or 'relu'.

    ``args`` are register numbers of earlier steps; ``value`` is the input's
    index (for 'input') or the constant (for 'const').
    """

    kind: str
    args: tuple[int, ...] = ()
    value: float = 0.0


@dataclass(frozen=True)
class Program:
    """A scalar expression: ``steps[i]`` computes register ``i``; the last register is the output."""

    steps: tuple[Step, ...]
    n_inputs: int

    def __str__(self) -> str:
        text: list[str] = []
        for step in self.steps:
            if step.kind == "input":
                text.append(f"x{int(step.value)}")
            elif step.kind == "const":
                text.append(f"{step.value:g}")
            elif step.kind == "add":
                text.append(f"({text[step.args[0]]} + {text[step.args[1]]})")
            elif step.kind == "mul":
                text.append(f"{text[step.args[0]]} * {text[step.args[1]]}")
            else:
                text.append(f"{step.kind}({text[step.args[0]]})")
        out = text[-1]
        return out if len(out) <= 160 else out[:157] + "..."


@dataclass
class Engine:
    """The pieces of a scalar autodiff engine, as the notebook defines them."""

    Value: Callable[..., Any]
    add: Callable[[Any, Any], Any]
    mul: Callable[[Any, Any], Any]
    sin: Callable[[Any], Any]
    relu: Callable[[Any], Any]
    backward: Callable[[Any], Any]


def random_program(
    rng: np.random.Generator, n_inputs: int = 3, n_ops: int = 8, p_const: float = 0.15
) -> Program:
    """A random expression over ``n_inputs`` inputs with ``n_ops`` operations.

    Operands are drawn from *all* earlier registers, so nodes are often used
    more than once (the case where gradients must accumulate), and a constant
    appears with probability ``p_const`` per operation.
    """
    steps: list[Step] = [Step("input", (), float(i)) for i in range(n_inputs)]
    for _ in range(n_ops):
        if rng.random() < p_const:
            steps.append(Step("const", (), float(np.round(rng.uniform(-2, 2), 2))))
        kind = str(rng.choice(BINARY + UNARY, p=[0.35, 0.35, 0.15, 0.15]))
        n_args = 2 if kind in BINARY else 1
        # Prefer recent registers so the expression grows deep, not just wide.
        weights = np.arange(1, len(steps) + 1, dtype=float) ** 2
        args = tuple(int(a) for a in rng.choice(len(steps), size=n_args, p=weights / weights.sum()))
        steps.append(Step(kind, args))
    return Program(tuple(steps), n_inputs)


def long_chain_program(length: int) -> Program:
    """``x0`` passed through ``length`` alternating ``sin`` and ``+ x0`` steps: a deep, thin graph."""
    steps = [Step("input", (), 0.0)]
    for i in range(length):
        if i % 2 == 0:
            steps.append(Step("sin", (len(steps) - 1,)))
        else:
            steps.append(Step("add", (len(steps) - 1, 0)))
    return Program(tuple(steps), 1)


def run_torch(program: Program, inputs: Sequence[float]) -> tuple[float, list[float]]:
    """Run ``program`` with torch autograd in float64; return (output, d output / d input_i)."""
    import torch

    xs = [torch.tensor(float(x), dtype=torch.float64, requires_grad=True) for x in inputs]
    regs: list[Any] = []
    for step in program.steps:
        if step.kind == "input":
            regs.append(xs[int(step.value)])
        elif step.kind == "const":
            regs.append(torch.tensor(step.value, dtype=torch.float64))
        elif step.kind == "add":
            regs.append(regs[step.args[0]] + regs[step.args[1]])
        elif step.kind == "mul":
            regs.append(regs[step.args[0]] * regs[step.args[1]])
        elif step.kind == "sin":
            regs.append(torch.sin(regs[step.args[0]]))
        else:
            regs.append(torch.relu(regs[step.args[0]]))
    out = regs[-1]
    if out.requires_grad:
        grads = torch.autograd.grad(out, xs, allow_unused=True)
    else:  # the output is a constant
        grads = (None,) * len(xs)
    return float(out.detach()), [0.0 if g is None else float(g) for g in grads]


def check_sin_graph(sin_graph: Callable, cases: Sequence[tuple[float, float]]) -> None:
    """``sin_graph(x, y) -> (z, L, dL_dz, dL_dx, dL_dy)`` for z = x + y, L = sin(z), at each (x, y) of ``cases``,
    against torch autograd in float64 (computed here, before the student's code runs; the oracle is local to this
    check: no check's oracle is importable)."""
    __tracebackhide__ = True
    import torch

    names = ("z", "L", "dL_dz", "dL_dx", "dL_dy")
    for x, y in cases:
        xt = torch.tensor(float(x), dtype=torch.float64, requires_grad=True)
        yt = torch.tensor(float(y), dtype=torch.float64, requires_grad=True)
        zt = xt + yt
        zt.retain_grad()
        lt = torch.sin(zt)
        lt.backward()
        want = (zt.item(), lt.item(), zt.grad.item(), xt.grad.item(), yt.grad.item())
        got = unpack(call(sin_graph, x, y, name="sin_graph"), names, "sin_graph(x, y)")
        where = f"at x = {x}, y = {y}."
        hints = (f"the forward pass {where}", f"the forward pass {where}",
                 f"The local derivative of the sin node, evaluated at its own input z (not at x or y) {where}",
                 f"dL/dx = dL/dz * dz/dx: what is the addition node's local derivative? {where}",
                 f"dL/dy = dL/dz * dz/dy {where}")
        for name, g, w, hint in zip(names, got, want, hints):
            expect_close(g, w, name, hint=hint)


#: What each lecture check compares: (the student's names, the keys of the torch values, the hints). The values
#: are never printed (reveal=False): they are the lecture's blanks.
_LECTURE = {
    "lecture_forward": (("q", "f"), ("q", "f"),
                        (". q is the addition node's output.", ". f multiplies q by z: the addition happens first.")),
    "lecture_local_grads": (("df_dq", "df_dz", "dq_dx", "dq_dy"), ("df_dq", "df_dz", "dq_dx", "dq_dy"),
                            (". Raise q by a small h: how much does f = q z change?",
                             ". Raise z by a small h: how much does f = q z change?",
                             ". Raise x by a small h: how much does q = x + y change?",
                             ". Raise y by a small h.")),
    "lecture_backprop": (("f", "df_dx", "df_dy", "df_dz"), ("f", "df_dx", "df_dy", "df_dz_total"),
                         (": the forward pass.", ": multiply the local gradients along the path x -> q -> f.",
                          ": multiply the local gradients along the path y -> q -> f.",
                          ": z reaches f directly, through the product.")),
}


def check_lecture(fn: Callable, which: str, cases: Sequence[tuple[float, float, float]]) -> None:
    """``which`` is "lecture_forward", "lecture_local_grads" or "lecture_backprop": ``fn(x, y, z)`` at each case
    against torch autograd in float64 on f = (x + y) z (computed before the student's code runs), without
    printing the values."""
    __tracebackhide__ = True

    def _lecture_values(x: float, y: float, z: float) -> dict[str, float]:
        """The lecture's f = (x + y) z in torch (float64): what the three lecture checks compare with."""
        import torch

        def leaf(v: float) -> Any:
            return torch.tensor(float(v), dtype=torch.float64, requires_grad=True)

        xt, yt, zt = leaf(x), leaf(y), leaf(z)
        qt = xt + yt
        qt.retain_grad()
        ft = qt * zt
        ft.backward()
        # Local gradients: each node on its own, with fresh leaves for its inputs.
        q_leaf, z_leaf = leaf(qt.item()), leaf(z)
        (q_leaf * z_leaf).backward()
        x_leaf, y_leaf = leaf(x), leaf(y)
        (x_leaf + y_leaf).backward()
        return {"q": qt.item(), "f": ft.item(), "df_dq": q_leaf.grad.item(), "df_dz": z_leaf.grad.item(),
                "dq_dx": x_leaf.grad.item(), "dq_dy": y_leaf.grad.item(), "df_dx": xt.grad.item(),
                "df_dy": yt.grad.item(), "df_dz_total": zt.grad.item()}

    names, keys, hints = _LECTURE[which]
    for args in cases:
        want = _lecture_values(*args)
        got = unpack(call(fn, *args, name=which), names, f"{which}(x, y, z)")
        for name, g, key, hint in zip(names, got, keys, hints):
            expect_close(g, want[key], name, reveal=False, hint=f"at (x, y, z) = {tuple(args)}{hint}")


def run_engine(program: Program, inputs: Sequence[float], engine: Engine) -> tuple[Any, list[Any]]:
    """Build ``program`` from ``engine``'s Values, call its backward; return (root node, input nodes)."""
    __tracebackhide__ = True
    xs = [call(engine.Value, float(x), name="Value") for x in inputs]
    regs: list[Any] = []
    ops = {"add": engine.add, "mul": engine.mul, "sin": engine.sin, "relu": engine.relu}
    for step in program.steps:
        if step.kind == "input":
            regs.append(xs[int(step.value)])
        elif step.kind == "const":
            regs.append(call(engine.Value, step.value, name="Value"))
        else:
            fn = ops[step.kind]
            regs.append(call(fn, *(regs[a] for a in step.args), name=step.kind))
    root = regs[-1]
    call(engine.backward, root, name="backward")
    return root, xs


def collect_nodes(root: Any) -> list[Any]:
    """Every node reachable from ``root`` through ``.parents``, each once (iterative, any depth)."""
    seen: set[int] = set()
    nodes: list[Any] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(getattr(node, "parents", ()))
    return nodes


def check_node(
    node: Any,
    name: str,
    *,
    data: float,
    parents: Sequence[Any],
    local_grads: Sequence[float],
    op: str | None = None,
    hint: str = "",
) -> None:
    """Check one node that an operation returned: its value, its parents (the same objects, in order),
    local gradients and, with ``op`` given, the operation it records (what ``draw_graph`` prints)."""
    __tracebackhide__ = True
    for attr in ("data", "parents", "local_grads"):
        expect_true(
            hasattr(node, attr),
            f"{name} returned {type(node).__name__}, which has no .{attr}: return a Value(...).",
        )
    expect_close(node.data, data, f"{name}.data", hint="The forward value is wrong.")
    got_parents = tuple(node.parents)
    expect_true(
        len(got_parents) == len(parents),
        f"{name} should record {len(parents)} parent(s), but .parents has {len(got_parents)}.",
    )
    def not_itself(i: int) -> str:
        return (f"{name}.parents[{i}] is not the input node itself: record the Value objects you were "
                "given (not copies, not their .data), so backward can reach them.")

    for i, (got, want) in enumerate(zip(got_parents, parents)):
        expect_true(got is want, not_itself(i))
        # The same object, seen through the node's own link: a change to the input shows up there.
        saved = want.data
        probe = 7919.0 + 0.25 * i
        want.data = probe
        try:
            seen = read_path(node, "parents", i, "data")
        finally:
            want.data = saved
        expect_true(isinstance(seen, (int, float)) and seen == probe, not_itself(i))
    got_local = tuple(node.local_grads)
    expect_true(
        len(got_local) == len(local_grads),
        f"{name} should record one local gradient per parent ({len(local_grads)}), "
        f"but .local_grads has {len(got_local)}.",
    )
    for i, (got, want) in enumerate(zip(got_local, local_grads)):
        expect_close(got, want, f"{name}.local_grads[{i}]", hint=hint)
    if op is not None:
        got_op = getattr(node, "op", None)
        expect_true(
            isinstance(got_op, str) and got_op == op,
            f"{name}.op is {got_op!r}, but this operation should record op={op!r} (the label the graph "
            "drawings print in the node's box).",
        )


def check_topological_order(order: Any, root: Any, name: str = "topological_order(root)") -> None:
    """Check that ``order`` lists every node reachable from ``root`` once, parents first, root last."""
    __tracebackhide__ = True
    expect_true(
        isinstance(order, (list, tuple)),
        f"{name} should return a list of nodes, but returned {type(order).__name__}.",
    )
    reachable = collect_nodes(root)
    ids = [id(n) for n in order]
    expect_true(
        len(set(ids)) == len(ids),
        f"{name} lists some node more than once ({len(ids)} entries, {len(set(ids))} distinct). "
        "A node used twice (b = a + a) must appear once: remember which nodes you have visited.",
    )
    missing = len({id(n) for n in reachable} - set(ids))
    expect_true(
        missing == 0,
        f"{name} leaves out {missing} of the {len(reachable)} nodes reachable from the root: "
        "visit every parent of every node.",
    )
    extra = len(set(ids) - {id(n) for n in reachable})
    expect_true(extra == 0, f"{name} lists {extra} node(s) that the root does not depend on.")
    position = {i: k for k, i in enumerate(ids)}
    for node in order:
        for parent in node.parents:
            expect_true(
                position[id(parent)] < position[id(node)],
                f"In {name} a node comes before one of its parents: every node must come after "
                "all of its inputs (did you reverse the list one time too many?).",
            )
    expect_true(order[-1] is root, f"The root must be the last node of {name}.")


def check_backward(
    program: Program,
    inputs: Sequence[float],
    engine: Engine,
    *,
    reference: Engine | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
) -> None:
    """Run ``program`` with ``engine`` and compare the output and every input's gradient with torch.

    With ``reference`` given, the reference engine must agree with torch too
    (a guard against a broken oracle).
    """
    __tracebackhide__ = True
    want_out, want_grads = run_torch(program, inputs)
    where = f"on f = {program} at " + ", ".join(f"x{i} = {x:.4g}" for i, x in enumerate(inputs))
    if reference is not None:
        ref_root, ref_xs = run_engine(program, inputs, reference)
        if not all(
            math.isclose(x.grad, g, rel_tol=1e-9, abs_tol=1e-12) for x, g in zip(ref_xs, want_grads)
        ):
            raise RuntimeError(f"reference engine disagrees with torch {where}")
    root, xs = run_engine(program, inputs, engine)
    expect_close(root.data, want_out, "the output f", hint=where, rtol=rtol, atol=atol)
    expect_close(root.grad, 1.0, "root.grad after backward", hint="backward must start from df/df = 1.")
    got_all = [as_number(x.grad, f"x{i}.grad") for i, x in enumerate(xs)]
    wrong = [not abs(got - g) <= atol + rtol * abs(g) for got, g in zip(got_all, want_grads)]  # NaN is wrong
    if any(wrong):
        # The usual mistakes, replayed on the student's own graph: which one gives exactly these numbers?
        local_only = _local_gradients_only(root, xs)
        if all(got == 0 for got in got_all):
            raise CheckFailed(f"no gradient reached the inputs {where}: every x.grad is still 0. backward must pass "
                              "each node's gradient on to its parents (parent.grad += local * node.grad), starting "
                              "from the root.")
        if all(abs(got - lo) <= atol + rtol * abs(lo) for got, lo in zip(got_all, local_only)):
            raise CheckFailed(f"your gradients {where} are the local gradients alone, added up without the gradient "
                              "arriving from above: each contribution is local * node.grad (the chain rule), "
                              "not local.")
    for i, (x, g) in enumerate(zip(xs, want_grads)):
        got = got_all[i]
        if wrong[i]:
            ratio = got / g if g != 0 else float("nan")
            hint = ""
            if g != 0 and abs(round(ratio) - ratio) < 1e-9 and round(ratio) not in (0, 1):
                hint = (
                    f" Your value is {ratio:g} times the true one: a node is probably pushed "
                    "through backward more than once."
                )
            elif g != 0 and 0 < abs(ratio) < 1 and abs(1 / ratio - round(1 / ratio)) < 1e-9:
                hint = (
                    " Your value is too small by a whole factor: gradients from a node used "
                    "several times must be added (+=), not overwritten (=)."
                )
            raise CheckFailed(
                f"dL/dx{i} is wrong {where}: torch gives {g:.6g}, your engine {got:.6g} "
                f"(off by {abs(got - g):.3g}).{hint}"
            )


def _local_gradients_only(root: Any, inputs: Sequence[Any]) -> list[float]:
    """What a backward that adds ``local`` instead of ``local * node.grad`` gives the inputs: the sum, over
    every edge into a node, of that edge's local gradient (no order matters without the upstream factor)."""
    total: dict[int, float] = {}
    for node in collect_nodes(root):
        for parent, local in zip(getattr(node, "parents", ()), getattr(node, "local_grads", ())):
            total[id(parent)] = total.get(id(parent), 0.0) + float(local)
    return [total.get(id(x), 0.0) for x in inputs]


def backward_hint(got: Any, local_only: float, beside_root: Any = None) -> str:
    """The hint for a wrong gradient on the lecture's graph f = (x + y) z: what the value says went wrong.
    ``local_only`` is what adding the local gradients without the upstream factor would give this node;
    ``beside_root``: the gradient a parent of the root (z) received, when this node is further down."""
    value = as_number(got, "the gradient")
    if value == 0 and beside_root is not None and as_number(beside_root, "the gradient") != 0:
        return ("The root's own parents got their gradients but this node got none: it was visited before the "
                "nodes above it had passed theirs on. A node's gradient must be complete before it is passed on to "
                "its parents: in which order must backward visit the nodes?")
    if value == 0:
        return ("No gradient reached this node: backward must pass each node's gradient on to its parents "
                "(parent.grad += local * node.grad), starting from the root.")
    if value == local_only:
        return ("That is the local gradient alone: each contribution is local * node.grad, the local gradient times "
                "the gradient arriving from above (the chain rule).")
    return "A node's gradient must be complete before it is passed on to its parents: in which order must backward " \
           "visit the nodes?"


# -- closing the loop: a tiny network trained with the student's engine ---------------------------


def two_moons(n: int, seed: int = 0, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-moons in the plane: ``points`` (n, 2) float64, ``labels`` (n,) of +1/-1.

    Half the points (rounded up) lie on the upper moon (label +1), the rest on the lower one
    (label -1); Gaussian noise of standard deviation ``noise`` is added, and the coordinates are
    centred and scaled so both lie roughly in [-1.5, 1.5].
    """
    if n < 2:
        raise ValueError(f"two_moons needs at least 2 points (one per class), got n={n}.")
    rng = np.random.default_rng(seed)
    n_up = (n + 1) // 2
    t_up = rng.uniform(0.0, math.pi, n_up)
    t_down = rng.uniform(0.0, math.pi, n - n_up)
    up = np.stack([np.cos(t_up), np.sin(t_up)], axis=1)
    down = np.stack([1.0 - np.cos(t_down), 0.5 - np.sin(t_down)], axis=1)
    points = np.concatenate([up, down]) + noise * rng.standard_normal((n, 2))
    points = (points - np.array([0.5, 0.25])) / np.array([1.0, 0.5])
    labels = np.concatenate([np.ones(n_up), -np.ones(n - n_up)])
    order = rng.permutation(n)
    return points[order], labels[order]


@dataclass
class TinyMLP:
    """A network with 2 inputs, one hidden layer of ReLU units and one output score.

    Every weight is one of the engine's ``Value`` nodes: ``w1[j][i]`` connects input ``i`` to
    hidden unit ``j``, ``b1[j]`` is that unit's bias, ``w2[j]`` connects it to the score and ``b2``
    is the score's bias.
    """

    w1: list[list[Any]]
    b1: list[Any]
    w2: list[Any]
    b2: Any

    def parameters(self) -> list[Any]:
        return [w for row in self.w1 for w in row] + list(self.b1) + list(self.w2) + [self.b2]

    def numpy_scores(self, points: np.ndarray) -> np.ndarray:
        """The scores for ``points`` (m, 2), computed with numpy from the weights' current values: (m,)."""
        w1 = np.array([[float(w.data) for w in row] for row in self.w1])
        b1 = np.array([float(b.data) for b in self.b1])
        w2 = np.array([float(w.data) for w in self.w2])
        return np.maximum(points @ w1.T + b1, 0.0) @ w2 + float(self.b2.data)


def _score(engine: Engine, net: TinyMLP, x: np.ndarray) -> Any:
    """The network's score for one point, built from the engine's operations (a fresh graph). Called
    inside :func:`~goingdeeper.checks.no_warnings` (see :func:`_fit_step`)."""
    __tracebackhide__ = True
    V = engine.Value
    out = net.b2
    for w_row, b, w_out in zip(net.w1, net.b1, net.w2):
        pre = b
        for w, xi in zip(w_row, x):
            product = call(engine.mul, w, call(V, float(xi), name="Value", watch=False), name="mul", watch=False)
            pre = call(engine.add, pre, product, name="add", watch=False)
        unit = call(engine.relu, pre, name="relu", watch=False)
        out = call(engine.add, out, call(engine.mul, w_out, unit, name="mul", watch=False), name="add", watch=False)
    return out


def fit_tiny_mlp(
    engine: Engine,
    points: np.ndarray,
    labels: np.ndarray,
    *,
    hidden: int = 8,
    steps: int = 60,
    lr: float = 0.1,
    seed: int = 0,
    weights: list | None = None,
    gradients: list | None = None,
) -> tuple[TinyMLP, list[float], list[float]]:
    """Train a :class:`TinyMLP` on ``points`` (n, 2) with ``labels`` (n,) in {+1, -1}, using only ``engine``.

    Each step builds the mean hinge loss ``mean(relu(1 - y * score))`` over all points as one
    graph of the engine's nodes, sets every weight's ``grad`` to 0, calls the engine's
    ``backward`` on the loss and moves every weight by ``-lr * grad`` (full-batch gradient
    descent). Returns the network and, per step, the loss and the training accuracy (the
    fraction of points with ``sign(score) == label``), both measured before that step's update.
    With ``weights`` (a list) given, each step appends to it the weights' values before its update,
    in the order of :meth:`TinyMLP.parameters`; with ``gradients``, the grads the engine's
    ``backward`` gave them in that step (each step's update is ``weights - lr * gradients``).
    """
    __tracebackhide__ = True
    points = np.asarray(points, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(f"fit_tiny_mlp needs points of shape (n, 2) and labels of shape (n,), "
                         f"got {points.shape} and {labels.shape}.")
    V = engine.Value
    start = iter(_initial_weights(hidden, seed))

    def weight() -> Any:
        return call(V, next(start), name="Value", watch=False)

    net = TinyMLP(
        w1=[[weight(), weight()] for _ in range(hidden)],
        b1=[weight() for _ in range(hidden)],
        w2=[weight() for _ in range(hidden)],
        b2=weight(),
    )
    params = net.parameters()
    losses: list[float] = []
    accuracies: list[float] = []
    for _ in range(steps):
        with no_warnings("training with your engine"):  # one record of warnings per step, not per operation
            loss, accuracy = _fit_step(engine, net, params, points, labels, lr, weights, gradients, len(losses))
        losses.append(loss)
        accuracies.append(accuracy)
    return net, losses, accuracies


def _fit_step(engine: Engine, net: TinyMLP, params: list, points: np.ndarray, labels: np.ndarray, lr: float,
              weights: list | None, gradients: list | None, done: int) -> tuple[float, float]:
    """One step of :func:`fit_tiny_mlp` (``done`` steps before it): (loss, accuracy) before the
    update, which moves the weights. Each call of the engine is :func:`call` without its own record
    of warnings: fit_tiny_mlp keeps one per step."""
    __tracebackhide__ = True
    V = engine.Value

    def op(function: Any, *args: Any, name: str) -> Any:
        __tracebackhide__ = True
        return call(function, *args, name=name, watch=False)

    if weights is not None:
        weights.append([float(p.data) for p in params])
    total = op(V, 0.0, name="Value")
    correct = 0
    for x, y in zip(points, labels):
        score = _score(engine, net, x)
        correct += int((as_number(score.data, "score") > 0) == (y > 0))
        margin = op(engine.add, op(V, 1.0, name="Value"),
                    op(engine.mul, op(V, -float(y), name="Value"), score, name="mul"), name="add")
        total = op(engine.add, total, op(engine.relu, margin, name="relu"), name="add")
    loss = op(engine.mul, total, op(V, 1.0 / len(points), name="Value"), name="mul")
    value = as_number(loss.data, "the loss")
    if not math.isfinite(value):
        raise CheckFailed(f"the loss became {value} after {done} steps: a gradient is far off.")
    for p in params:
        p.grad = 0.0
    op(engine.backward, loss, name="backward")
    grads = [as_number(p.grad, "a weight's grad") for p in params]
    if gradients is not None:
        gradients.append(grads)
    for p, g in zip(params, grads):
        p.data = float(p.data) - lr * g
    return value, correct / len(points)


def _initial_weights(hidden: int, seed: int) -> list[float]:
    """The weights a :class:`TinyMLP` starts from, in the order of :meth:`TinyMLP.parameters`."""
    rng = np.random.default_rng(seed)
    w1 = [float(rng.uniform(-1.0, 1.0)) for _ in range(2 * hidden)]
    b1 = [float(rng.uniform(-0.1, 0.1)) for _ in range(hidden)]
    scale = 1.0 / math.sqrt(hidden)
    w2 = [float(rng.uniform(-scale, scale)) for _ in range(hidden)]
    return w1 + b1 + w2 + [0.0]


def _hinge(weights: Sequence[float], points: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean hinge loss, accuracy) of the :class:`TinyMLP` with these weights, computed with numpy."""
    hidden = (len(weights) - 1) // 4
    w = np.asarray(weights, dtype=float)
    w1, b1, w2, b2 = w[: 2 * hidden].reshape(hidden, 2), w[2 * hidden: 3 * hidden], w[3 * hidden: -1], w[-1]
    scores = np.maximum(points @ w1.T + b1, 0.0) @ w2 + b2
    return float(np.mean(np.maximum(1.0 - labels * scores, 0.0))), float(np.mean((scores > 0) == (labels > 0)))


def _unpack_weights(weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(w1 (hidden, 2), b1, w2, b2) from the weights in the order of :meth:`TinyMLP.parameters`."""
    hidden = (len(weights) - 1) // 4
    w = np.asarray(weights, dtype=float)
    return w[: 2 * hidden].reshape(hidden, 2), w[2 * hidden: 3 * hidden], w[3 * hidden: -1], float(w[-1])


def _weight_name(k: int, hidden: int) -> str:
    """The name of the ``k``-th weight in the order of :meth:`TinyMLP.parameters`, e.g. ``w1[2][0]``."""
    if k < 2 * hidden:
        return f"w1[{k // 2}][{k % 2}]"
    if k < 3 * hidden:
        return f"b1[{k - 2 * hidden}]"
    return f"w2[{k - 3 * hidden}]" if k < 4 * hidden else "b2"


#: How far (relative to the sum of the absolute values of the terms that make it up) an engine's
#: gradient of the tiny network's loss may be from numpy's. The engine works with Python floats
#: (float64) and sums in another order: rounding moves a gradient by ~1e-16 of that sum. An engine
#: whose numbers pass through float32 is off by ~1e-7. A gradient that is wrong misses or adds a
#: whole term (one point's share, ~1e-2 here), so 1e-6 accepts every honest rounding and nothing else.
GRADIENT_RTOL = 1e-6
GRADIENT_ATOL = 1e-9
#: Where a ReLU's input is within this (relative) distance of 0, rounding may put an engine on the
#: other side of the kink than numpy: both one-sided derivatives are accepted there.
KINK = 1e-9


def _hinge_gradient(weights: Sequence[float], points: np.ndarray,
                    labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, tolerance) of :func:`_hinge`'s mean hinge loss with respect to the weights, in float64.

    The gradient in closed form, as :func:`fit_tiny_mlp`'s graph defines it (no regularisation;
    ReLU'(0) = 0, as the engine's ``relu``): with ``s = relu(x w1^T + b1) w2 + b2`` and
    ``L = mean(relu(1 - y s))``, ``dL/ds_i = -y_i [1 - y_i s_i > 0] / n`` and back through the
    hidden layer. The tolerance, per weight, is :data:`GRADIENT_RTOL` of the sum of the absolute
    values of its terms plus :data:`GRADIENT_ATOL`, plus what a ReLU input within :data:`KINK` of
    0 could change.
    """
    w1, b1, w2, b2 = _unpack_weights(weights)
    n = len(points)
    pre = points @ w1.T + b1                                  # (n, hidden)
    h = np.maximum(pre, 0.0)
    scores = h @ w2 + b2
    margins = 1.0 - labels * scores
    d_scores = -labels * (margins > 0) / n                    # dL/ds_i
    d_pre = d_scores[:, None] * w2[None, :] * (pre > 0)       # dL/dpre_ij
    gradient = np.concatenate([(d_pre.T @ points).ravel(), d_pre.sum(axis=0), h.T @ d_scores, [d_scores.sum()]])
    # The size of each gradient's terms, and what the kinks may change.
    a_scores, a_pre = np.abs(d_scores), np.abs(d_pre)
    scale = np.concatenate([(a_pre.T @ np.abs(points)).ravel(), a_pre.sum(axis=0), h.T @ a_scores, [a_scores.sum()]])
    at_kink = np.abs(margins) <= KINK * (1.0 + np.abs(scores))
    unit_at_kink = np.abs(pre) <= KINK * (np.abs(b1) + np.abs(points) @ np.abs(w1).T)
    d_scores_max = np.where(at_kink, 1.0 / n, a_scores)
    pre_slack = np.abs(w2)[None, :] * d_scores_max[:, None] * (at_kink[:, None] | unit_at_kink)
    score_slack = at_kink / n
    slack = np.concatenate([(pre_slack.T @ np.abs(points)).ravel(), pre_slack.sum(axis=0), h.T @ score_slack,
                            [score_slack.sum()]])
    return gradient, GRADIENT_RTOL * scale + GRADIENT_ATOL + slack


#: What notebook 01's test_engine_training asks of a run: the loss falls below this fraction of its
#: first value, and the last accuracy is at least this (tests/test_package.py keeps them in step).
TRAINED_LOSS_FRACTION = 0.3
TRAINED_ACCURACY = 0.9


def train_tiny_mlp(
    engine: Engine,
    points: np.ndarray,
    labels: np.ndarray,
    *,
    hidden: int = 8,
    steps: int = 60,
    lr: float = 0.1,
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """:func:`fit_tiny_mlp` run in one go where ``engine``'s code lives: (losses, accuracies), plain floats.

    In a notebook this is ``fit_tiny_mlp`` less the network. The grading command runs the student's
    code in another process, where each of the engine's operations would be one request (about
    12,000 for 20 steps on 12 points); here the whole training is one request (see
    :func:`goingdeeper.checks.beside`). What comes back is checked here, with numpy: the weights
    start where the seed puts them, each step's loss is the loss of that step's weights, and each
    step moves the weights by ``-lr`` times the gradients reported for that step.

    Whether those gradients are the loss's (numpy's, :func:`_hinge_gradient`) is checked only for a
    run that did what test_engine_training asks (:data:`TRAINED_LOSS_FRACTION`,
    :data:`TRAINED_ACCURACY`): a report that made training look done without gradient descent fails
    here. A run that did not train is returned as it is: an engine with a wrong ``backward`` gets
    the test's own message (its loss did not fall), not one about gradients it could not know.
    """
    __tracebackhide__ = True
    points = np.asarray(points, dtype=float)
    labels = np.asarray(labels, dtype=float)
    result = beside(engine.Value, _train_tiny_mlp_here, engine.Value, engine.add, engine.mul, engine.sin,
                    engine.relu, engine.backward, points.tolist(), labels.tolist(),
                    hidden=int(hidden), steps=int(steps), lr=float(lr), seed=int(seed))
    expect_true(isinstance(result, (list, tuple)) and len(result) == 3,
                "training with your engine did not report its losses, weights and gradients.")
    losses = [as_number(v, "a loss") for v in result[0]]
    weights = [[as_number(w, "a weight") for w in row] for row in result[1]]
    grads = [[as_number(g, "a gradient") for g in row] for row in result[2]]
    expect_true(len(losses) == len(weights) == len(grads) == steps
                and all(len(row) == 4 * hidden + 1 for row in weights + grads),
                f"training with your engine reported {min(len(losses), len(weights), len(grads))} of its "
                f"{steps} steps.")
    expect_true(np.allclose(weights[0], _initial_weights(hidden, seed), rtol=1e-6, atol=1e-12),
                "training with your engine did not start from the network's initial weights.")
    accuracies = []
    for step, (loss, row) in enumerate(zip(losses, weights)):
        want, accuracy = _hinge(row, points, labels)
        expect_close(loss, want, f"the loss at step {step} of training", rtol=1e-6, atol=1e-9,
                     hint="Your engine's forward values disagree with the network's weights.")
        accuracies.append(accuracy)
    # Each step is one step of gradient descent with the gradients reported for it: fit_tiny_mlp
    # computes w - lr * g in Python floats, so only float32 storage in an engine's Value moves it.
    w, g = np.asarray(weights), np.asarray(grads)
    moved = w[:-1] - lr * g[:-1]
    off = np.abs(w[1:] - moved) > 1e-9 + 1e-6 * np.abs(moved)
    if off.any():
        step, k = map(int, np.argwhere(off)[0])
        raise CheckFailed(
            f"training with your engine reported weights that are not gradient descent with its own gradients: "
            f"at step {step + 1}, {_weight_name(k, hidden)} is {w[step + 1, k]:.9g}, but step {step} left it at "
            f"{w[step, k]:.9g} - {lr:g} * {g[step, k]:.9g} = {moved[step, k]:.9g}. The report did not come "
            "from scalar.fit_tiny_mlp's training.")
    if losses[-1] < TRAINED_LOSS_FRACTION * losses[0] and accuracies[-1] >= TRAINED_ACCURACY:
        # The run claims the network trained: it must have been gradient descent on the loss.
        for step, (row, reported) in enumerate(zip(weights, g)):
            true, tolerance = _hinge_gradient(row, points, labels)
            wrong = np.abs(reported - true) > tolerance
            if wrong.any():
                k = int(np.argmax(wrong))
                raise CheckFailed(
                    f"training with your engine is not gradient descent on the network's loss: at step {step} "
                    f"the gradient of the loss with respect to {_weight_name(k, hidden)} is {true[k]:.6g} "
                    f"(computed with numpy), but {reported[k]:.6g} was used. The loss falling does not count "
                    "when the gradients are not the loss's: check backward and the local gradients of add, "
                    "mul and relu (their tests above compare them with torch).")
    return losses, accuracies


def _train_tiny_mlp_here(Value: Any, add: Any, mul: Any, sin: Any, relu: Any, backward: Any, points: list,
                         labels: list, **kwargs: Any) -> tuple[list[float], list[list[float]], list[list[float]]]:
    """:func:`train_tiny_mlp`'s work, done in the process that calls it (the student's, when graded):
    the losses and, per step, the weights before its update and the gradients the engine gave them."""
    __tracebackhide__ = True
    engine = Engine(Value, add, mul, sin, relu, backward)
    weights: list[list[float]] = []
    gradients: list[list[float]] = []
    _, losses, _ = fit_tiny_mlp(engine, np.asarray(points, dtype=float), np.asarray(labels, dtype=float),
                                weights=weights, gradients=gradients, **kwargs)
    return [float(v) for v in losses], weights, gradients


def plot_tiny_mlp(
    net: TinyMLP, points: np.ndarray, labels: np.ndarray, losses: Sequence[float]
) -> Any:
    """Two panels: the plane coloured by the network's decision with the training points on top, and
    the loss over the steps of training. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    points = np.asarray(points, dtype=float)
    fig, (ax_plane, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    lo = points.min(axis=0) - 0.5
    hi = points.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    scores = net.numpy_scores(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    ax_plane.contourf(gx, gy, scores > 0, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"], alpha=0.8)
    ax_plane.contour(gx, gy, scores, levels=[0.0], colors="k", linewidths=1)
    up = np.asarray(labels) > 0
    ax_plane.scatter(*points[up].T, c="#2166ac", edgecolors="k", label="class +1")
    ax_plane.scatter(*points[~up].T, c="#b2182b", edgecolors="k", marker="s", label="class -1")
    ax_plane.set(title="What the network learned (black line: score = 0)", xlabel="$x_0$", ylabel="$x_1$")
    ax_plane.legend(loc="upper right", fontsize=8)
    ax_loss.plot(np.arange(len(losses)), losses)
    ax_loss.set(title="Mean hinge loss during training", xlabel="step of gradient descent", ylabel="loss")
    ax_loss.set_ylim(bottom=0)
    return fig
