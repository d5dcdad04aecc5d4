"""Reference solutions for notebook 01 (computational graphs and scalar backprop).

Hidden tests compare the student's answers with these, and with torch
autograd. The names match the notebook's answers (grade ids share the stem).
"""

from __future__ import annotations

import math

from goingdeeper.scalar import Engine


# sin_graph ---------------------------------------------------------------
def sin_graph(x: float, y: float) -> tuple[float, float, float, float, float]:
    """z = x + y, L = sin(z): returns (z, L, dL/dz, dL/dx, dL/dy)."""
    z = x + y
    L = math.sin(z)
    dL_dz = math.cos(z)
    return z, L, dL_dz, dL_dz * 1.0, dL_dz * 1.0


# lecture_forward, lecture_local_grads, lecture_chain -------------------------
def lecture_forward(x: float, y: float, z: float) -> tuple[float, float]:
    """f = (x + y) z: returns (q, f) with q = x + y."""
    q = x + y
    return q, q * z


def lecture_local_grads(x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """Returns (df/dq, df/dz, dq/dx, dq/dy) at (x, y, z)."""
    return z, x + y, 1.0, 1.0


def lecture_backprop(x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """f = (x + y) z: returns (f, df/dx, df/dy, df/dz)."""
    _, f = lecture_forward(x, y, z)
    df_dq, df_dz, dq_dx, dq_dy = lecture_local_grads(x, y, z)
    return f, df_dq * dq_dx, df_dq * dq_dy, df_dz


# the engine ----------------------------------------------------------------
class Value:
    """A scalar node: value, gradient, parents and the local gradient towards each parent."""

    def __init__(self, data, parents=(), local_grads=(), op="", label=""):
        self.data = float(data)
        self.grad = 0.0
        self.parents = tuple(parents)
        self.local_grads = tuple(local_grads)
        self.op = op
        self.label = label

    def __repr__(self) -> str:
        return f"Value(data={self.data:.4g}, grad={self.grad:.4g})"


def add(a: Value, b: Value) -> Value:
    return Value(a.data + b.data, (a, b), (1.0, 1.0), "+")


def mul(a: Value, b: Value) -> Value:
    return Value(a.data * b.data, (a, b), (b.data, a.data), "*")


def sin(a: Value) -> Value:
    return Value(math.sin(a.data), (a,), (math.cos(a.data),), "sin")


def relu(a: Value) -> Value:
    return Value(max(a.data, 0.0), (a,), (1.0 if a.data > 0 else 0.0,), "relu")


def topological_order(root: Value) -> list[Value]:
    """Iterative depth-first search: parents before children, root last, each node once."""
    order: list[Value] = []
    visited: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


def backward(root: Value) -> None:
    root.grad = 1.0
    for node in reversed(topological_order(root)):
        for parent, local in zip(node.parents, node.local_grads):
            parent.grad += local * node.grad


ENGINE = Engine(Value=Value, add=add, mul=mul, sin=sin, relu=relu, backward=backward)
