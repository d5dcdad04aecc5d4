"""Figures the lecture showed as pictures, drawn from live objects."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import networkx as nx

from .scalar import collect_nodes

__all__ = ["draw_graph"]

OP_NAMES = {"+": "+", "*": "\u00d7", "add": "+", "mul": "\u00d7"}


def _node_text(node: Any) -> str:
    label = getattr(node, "label", "") or ""
    op = getattr(node, "op", "") or ""
    head = OP_NAMES.get(op, op)
    if head and label:
        head = f"{head}  \u2192  {label}"
    elif label:
        head = label
    elif not head:
        head = "const"
    return f"{head}\n{node.data:.4g}"


def draw_graph(root: Any, *, show_grad: bool = True, ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """Draw the computational graph that ends in ``root``, inputs on the left, output on the right.

    Each box shows the node's operation (or its label, e.g. ``x``) and its
    forward value in green; with ``show_grad``, the gradient of the output with
    respect to the node is written under the box in red, the way the lecture's
    figure annotates the graph. Works on any object with ``data``, ``grad``
    and ``parents`` attributes; ``op`` and ``label`` are used when present.
    Returns the matplotlib Axes.
    """
    nodes = collect_nodes(root)
    graph = nx.DiGraph()
    for node in nodes:
        graph.add_node(id(node))
        for parent in getattr(node, "parents", ()):
            graph.add_edge(id(parent), id(node))
    # Place each node by its longest distance from an input, so edges run left to right.
    depth: dict[int, int] = {}
    for key in nx.topological_sort(graph):
        depth[key] = max((depth[p] + 1 for p in graph.predecessors(key)), default=0)
        graph.nodes[key]["layer"] = depth[key]
    pos = nx.multipartite_layout(graph, subset_key="layer")
    by_id = {id(n): n for n in nodes}

    if ax is None:
        width = 2.3 * (max(depth.values()) + 1) + 1
        height = 1.6 * max(sum(1 for d in depth.values() if d == k) for k in set(depth.values())) + 1
        _, ax = plt.subplots(figsize=(min(width, 16), min(max(height, 3), 10)))
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    pad_x = 0.25 * (max(xs) - min(xs) or 1.0)
    pad_y = 0.3 * (max(ys) - min(ys) or 1.0)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    boxes = {}
    for key, (x, y) in pos.items():
        node = by_id[key]
        boxes[key] = ax.text(
            x, y, _node_text(node), ha="center", va="center", fontsize=9, family="monospace",
            color="darkgreen", bbox=dict(boxstyle="round,pad=0.4", fc="white", ec="0.3"), zorder=3,
        )
        if show_grad:
            ax.annotate(
                f"grad {node.grad:.4g}", (x, y), xytext=(0, -24), textcoords="offset points",
                ha="center", va="top", fontsize=9, family="monospace", color="firebrick", zorder=3,
            )
    for parent, child in graph.edges:
        ax.annotate(
            "", xy=pos[child], xytext=pos[parent],
            arrowprops=dict(arrowstyle="-|>", color="0.4", shrinkA=2, shrinkB=2,
                            patchA=boxes[parent].get_bbox_patch(), patchB=boxes[child].get_bbox_patch()),
            zorder=1,
        )
    ax.set_axis_off()
    ax.set_title(title or ("forward values (green) and gradients (red)" if show_grad else "forward values"))
    return ax
