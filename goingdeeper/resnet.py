"""Notebook 04's machinery: block checks, counting, the two experiments, and the lost block diagrams.

* **Checks.** A :class:`BlockCase` is a block with known weights (and running statistics), an input,
  the upstream gradient, and what the block must return: the output in training and in inference
  mode and the input's gradient, plus the outputs of the usual wrong versions, so that a failing
  check can say which mistake it sees. :func:`check_block` loads a case into a student's block.
  The visible tests read their cases from ``goingdeeper/data/resnet_cases.npz``; the hidden tests
  make fresh ones from the course's reference with :func:`make_case`.
* **Counting.** :func:`count_parameters`, :func:`stage_shapes` (on PyTorch's ``meta`` device: shapes
  without arithmetic), :func:`count_macs` (multiply-adds, with a given cost function per layer).
* **Experiments.** :func:`fit_identity` trains a deep stack to reproduce its input;
  :func:`first_block_grad_norms` measures the gradient at the first block of CIFAR networks of growing
  depth, at initialisation; :func:`fit_rate` fits a per-block rate.
* **Figures.** :func:`draw_blocks` redraws the lecture's block diagrams; :func:`plot_identity` and
  :func:`plot_grad_norms` draw the experiments.

Tensors are float32, (N, C, H, W) for images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .checks import CheckFailed, call, expect_true, is_a

__all__ = [
    "BlockCase",
    "CASES_PATH",
    "check_block",
    "count_macs",
    "count_parameters",
    "draw_blocks",
    "fit_identity",
    "fit_rate",
    "first_block_grad_norms",
    "load_cases",
    "make_case",
    "plot_grad_norms",
    "plot_identity",
    "save_cases",
    "stage_shapes",
]

CASES_PATH = Path(__file__).resolve().parent / "data" / "resnet_cases.npz"
RTOL, ATOL = 1e-4, 1e-5


# -- cases -----------------------------------------------------------------------------------------
@dataclass
class BlockCase:
    """One block, fixed: build it with ``kwargs``, load ``state``, feed ``x`` (train mode) and ``dy``.

    ``out`` and ``dx`` are the output and dL/dx for L = sum(out * dy) in training mode, ``out_eval``
    the output in inference mode (running statistics from ``state``). ``variants`` holds the
    training-mode outputs of known wrong versions, by the name of the mistake.
    """

    name: str
    kwargs: dict[str, Any]
    state: dict[str, Any]
    x: Any
    dy: Any
    out: Any
    dx: Any
    out_eval: Any
    variants: dict[str, Any] = field(default_factory=dict)


def _random_state(block: Any, generator: Any) -> dict[str, Any]:
    """Weights and running statistics drawn at random (so that every BN matters in both modes)."""
    import torch

    state = {}
    for name, value in block.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = value.clone()
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=generator) + 0.5
        elif name.endswith("running_mean"):
            state[name] = torch.randn(value.shape, generator=generator) * 0.2
        elif value.dim() >= 2:  # convolution and linear weights, at a scale that keeps activations O(1)
            fan_in = value[0].numel()
            state[name] = torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / fan_in)
        elif name.endswith("weight"):  # BN gamma: around 1, never 0
            state[name] = torch.rand(value.shape, generator=generator) + 0.5
        else:  # biases and BN beta
            state[name] = torch.randn(value.shape, generator=generator) * 0.1
    return state


def make_case(factory: Callable[..., Any], kwargs: dict[str, Any], x_shape: Sequence[int], seed: int, *,
              name: str = "", variants: dict[str, dict[str, Any]] | None = None) -> BlockCase:
    """A case from a *reference* ``factory`` (a block class): seeded weights, input, upstream gradient.

    ``variants`` maps the name of a mistake to extra keyword arguments that make the reference
    commit it; only variants whose weights load under the same names are run.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    block = factory(**kwargs)
    state = _random_state(block, g)
    x = torch.randn(*x_shape, generator=g)
    block.load_state_dict(state)
    block.train()
    xr = x.clone().requires_grad_(True)
    out = block(xr)
    dy = torch.randn(out.shape, generator=g)
    (out * dy).sum().backward()
    block.load_state_dict(state)  # the forward pass moved the running statistics
    block.eval()
    with torch.no_grad():
        out_eval = block(x)
    outputs = {}
    for mistake, extra in (variants or {}).items():
        wrong = factory(**kwargs, **extra)
        try:
            wrong.load_state_dict(state)
        except RuntimeError:
            continue  # a different set of weights: the key check names that mistake
        wrong.train()
        with torch.no_grad():
            try:
                outputs[mistake] = wrong(x)
            except RuntimeError:
                continue
    return BlockCase(name, dict(kwargs), state, x, dy, out.detach(), xr.grad.detach(), out_eval, outputs)


def save_cases(cases: dict[str, BlockCase], path: Path = CASES_PATH) -> None:
    """Write cases to one ``.npz`` (float32 arrays; keyword arguments as JSON)."""
    import json

    arrays: dict[str, np.ndarray] = {}
    meta = {}
    for key, case in cases.items():
        meta[key] = {"name": case.name, "kwargs": case.kwargs, "state": list(case.state),
                     "variants": list(case.variants)}
        for part in ("x", "dy", "out", "dx", "out_eval"):
            arrays[f"{key}|{part}"] = getattr(case, part).numpy()
        for name, value in case.state.items():
            arrays[f"{key}|state|{name}"] = value.numpy()
        for name, value in case.variants.items():
            arrays[f"{key}|variant|{name}"] = value.numpy()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_cases(path: Path = CASES_PATH) -> dict[str, BlockCase]:
    """The cases of :func:`save_cases`, as tensors."""
    import json

    import torch

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        t = lambda key: torch.from_numpy(data[key].copy())  # noqa: E731
        return {key: BlockCase(m["name"], m["kwargs"], {n: t(f"{key}|state|{n}") for n in m["state"]},
                               t(f"{key}|x"), t(f"{key}|dy"), t(f"{key}|out"), t(f"{key}|dx"), t(f"{key}|out_eval"),
                               {n: t(f"{key}|variant|{n}") for n in m["variants"]})
                for key, m in meta.items()}


# -- checking a student's block ------------------------------------------------------------------------
def _close(a: Any, b: Any) -> bool:
    import torch

    return tuple(a.shape) == tuple(b.shape) and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def _as_tensor(value: Any, what: str) -> Any:
    import torch

    expect_true(isinstance(value, torch.Tensor), f"{what} should be a tensor, but it is {type(value).__name__}.")
    return value


def check_state_names(block: Any, case: BlockCase, what: str, hints: dict[str, str]) -> None:
    """The block has exactly the case's parameters and buffers, with the same names and shapes."""
    got = {name: tuple(value.shape) for name, value in call(block.state_dict, name=f"{what}.state_dict").items()}
    want = {name: tuple(value.shape) for name, value in case.state.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it has no {', '.join(missing[:6])}")
        if extra:
            parts.append(f"it has {', '.join(extra[:6])}, which it should not")
        hint = ""
        if any(name.startswith("shortcut.") for name in extra) and "project_always" in hints:
            hint = " " + hints["project_always"]
        elif any(name.startswith("shortcut.") for name in missing) and "missing_projection" in hints:
            hint = " " + hints["missing_projection"]
        raise CheckFailed(f"{what}: {'; '.join(parts)}. Name the layers as the docstring says "
                          f"({', '.join(sorted({n.split('.')[0] for n in want}))}).{hint}")
    for name in want:
        if got[name] != want[name]:
            hint = hints.get("expand_twice", "") if "conv2" in name or "conv1" in name else ""
            raise CheckFailed(f"{what}: {name} has shape {got[name]}, but should have {want[name]}. {hint}".strip())


def check_block(make_block: Callable[..., Any], case: BlockCase, what: str, hints: dict[str, str] | None = None
                ) -> None:
    """Build the student's block, load the case's weights, and compare outputs and dL/dx in both modes.

    ``hints`` maps the name of a mistake (a key of ``case.variants``, or 'project_always',
    'expand_twice', 'missing_projection', 'shape') to the sentence a student sees when it is found.
    """
    __tracebackhide__ = True
    import torch

    hints = hints or {}
    block = _construct(make_block, case.kwargs, what)
    check_state_names(block, case, what, hints)
    call(block.load_state_dict, case.state, name=f"{what}.load_state_dict")
    call(block.train, name=f"{what}.train")
    x = case.x.clone().requires_grad_(True)
    out = _as_tensor(call(block, x, name=what), f"the output of {what}")
    if tuple(out.shape) != tuple(case.out.shape):
        raise CheckFailed(f"{what} returns shape {tuple(out.shape)} for an input of shape {tuple(case.x.shape)}; "
                          f"it should be {tuple(case.out.shape)}. {hints.get('shape', '')}".strip())
    if not _close(out, case.out):
        for mistake, wrong in case.variants.items():
            if _close(out.detach(), wrong):
                raise CheckFailed(f"{what} computes the wrong function: {hints.get(mistake, mistake)}")
        error = float((out.detach() - case.out).abs().max())
        raise CheckFailed(f"{what} gives the wrong output in training mode (largest error {error:.3g}). "
                          f"{hints.get('output', '')}".strip())
    expect_true(out.requires_grad, f"the output of {what} does not depend on its input through autograd: "
                                   "use torch operations on x (no .detach(), .numpy() or .item()).")
    (out * case.dy).sum().backward()
    expect_true(x.grad is not None, f"no gradient reached the input of {what}.")
    if not _close(x.grad, case.dx):
        error = float((x.grad - case.dx).abs().max())
        raise CheckFailed(f"dL/dx through {what} is wrong (largest error {error:.3g}): the backward pass goes "
                          "through every operation of forward, the shortcut included.")
    call(block.eval, name=f"{what}.eval")
    with torch.no_grad():
        out_eval = _as_tensor(call(block, case.x.clone(), name=what), f"the output of {what}")
    if not _close(out_eval, case.out_eval):
        raise CheckFailed(f"{what} gives the wrong output in inference mode (.eval()): use nn.BatchNorm2d "
                          "layers, which switch to their running statistics.")


def _construct(make_block: Callable[..., Any], kwargs: dict[str, Any], what: str) -> Any:
    __tracebackhide__ = True
    label = what.split("(")[0]
    try:
        return make_block(**kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your "
                          "code.") from None
    except Exception as exc:  # noqa: BLE001 - reported in words
        raise CheckFailed(f"{what} could not be built: {type(exc).__name__}: {exc}") from None


# -- counting -----------------------------------------------------------------------------------------
def count_parameters(model: Any) -> int:
    """The number of learned numbers in ``model`` (its parameters, not its buffers)."""
    return sum(int(p.numel()) for p in model.parameters())


def _meta_input(size: int) -> Any:
    import torch

    return torch.empty(1, 3, size, size, device="meta")


def stage_shapes(model: Any, size: int = 224) -> dict[str, tuple[int, ...]]:
    """Output shapes of the stem and of layer1..layer4 for one size x size image.

    Runs on PyTorch's meta device (shapes only, no arithmetic); the model is moved there.
    Expects torchvision's names: conv1, bn1, relu, maxpool, layer1..layer4.
    """
    model = model.to("meta")
    h = model.maxpool(model.relu(model.bn1(model.conv1(_meta_input(size)))))
    shapes = {"stem": tuple(h.shape)}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        h = getattr(model, name)(h)
        shapes[name] = tuple(h.shape)
    return shapes


def count_macs(model: Any, multiplies: Callable[..., int], size: int = 224) -> int:
    """Multiply-adds of one size x size image: ``multiplies`` for every convolution, in x out for the FC.

    ``multiplies(h, w, c_in, c_out, k, stride, padding)`` counts one convolution on an h x w input.
    The model is moved to the meta device; batch norm, ReLU, pooling and the additions are not counted
    (as in the paper's FLOP figures).
    """
    import torch

    model = model.to("meta")
    records: list[tuple[Any, tuple[int, ...]]] = []

    def record(module, inputs, output):  # noqa: ARG001
        records.append((module, tuple(inputs[0].shape)))

    layers = [m for m in model.modules() if is_a(m, torch.nn.Conv2d) or is_a(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(record) for m in layers]
    try:
        model(_meta_input(size))
    finally:
        for h in handles:
            h.remove()
    total = 0
    for module, shape in records:
        if is_a(module, torch.nn.Linear):
            total += int(module.in_features) * int(module.out_features)
            continue
        k, s, p = module.kernel_size, module.stride, module.padding
        n = call(multiplies, int(shape[-2]), int(shape[-1]), int(module.in_channels), int(module.out_channels),
                 int(k[0]), int(s[0]), int(p[0]), name=getattr(multiplies, "__name__", "the cost function"))
        total += int(n)
    return total


# -- the identity experiment -------------------------------------------------------------------------------
def identity_branch(width: int, seed: int) -> Any:
    """Linear(width, 2 width) - ReLU - Linear(2 width, width): one such layer pair *can* be the identity
    (W2 [I, -I] relu([I; -I] x) = x), so a stack of them can represent it exactly."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.ReLU(), torch.nn.Linear(2 * width, width))


def fit_identity(model: Any, *, width: int, steps: int = 300, batch: int = 128, lr: float = 1e-3,
                 seed: int = 0) -> list[float]:
    """Train ``model`` to reproduce its input: x ~ N(0, 1)^width, loss ||model(x) - x||^2 / ||x||^2 (mean).

    Adam, a fresh batch every step; returns the loss of every step.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = torch.randn(batch, width, generator=g)
        loss = ((model(x) - x) ** 2).sum(dim=1).div(x.pow(2).sum(dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def plot_identity(curves: dict[str, list[float]], ax: Any = None, title: str = "") -> Any:
    """Loss curves of :func:`fit_identity` on a log axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, losses in curves.items():
        ax.semilogy(np.arange(1, len(losses) + 1), losses, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("relative error ||f(x) - x||^2 / ||x||^2")
    ax.set_title(title or "learning the identity")
    ax.legend()
    return ax


# -- gradient flow -----------------------------------------------------------------------------------------
def first_block_grad_norms(measure: Callable[..., Sequence[float]], build: Callable[[int], Any],
                           depths: Sequence[int], *, batch: int = 8, seed: int = 0) -> np.ndarray:
    """||dL/dx|| at the first block of ``build(depth)`` at initialisation, for every depth.

    ``measure(model, blocks, x, y)`` returns the norm at every block's input (notebook 04's exercise);
    the blocks are the model's ``layer1``, ``layer2``, ``layer3`` children in order. The input is a
    batch of random 32x32 images with random labels.
    """
    import torch

    norms = []
    for depth in depths:
        torch.manual_seed(seed)
        model = build(depth)
        blocks = [b for name in ("layer1", "layer2", "layer3") for b in getattr(model, name)]
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        norms.append(float(list(measure(model, blocks, x, y))[0]))
    return np.asarray(norms)


def fit_rate(depths: Sequence[int], norms: Sequence[float], blocks_per_depth: Callable[[int], int] | None = None
             ) -> tuple[float, float]:
    """Least-squares fit of log(norm) = log(C) + b log(rate), b the number of blocks: returns (C, rate).

    Notebook 02's method (a straight line through the logarithms), with the number of blocks
    ``(depth - 2) / 2`` of a CIFAR network as the exponent unless told otherwise.
    """
    blocks = np.asarray([(blocks_per_depth or (lambda d: (d - 2) // 2))(d) for d in depths], dtype=float)
    slope, intercept = np.polyfit(blocks, np.log(np.asarray(norms, dtype=float)), 1)
    return float(np.exp(intercept)), float(np.exp(slope))


def plot_grad_norms(depths: Sequence[int], curves: dict[str, np.ndarray], ax: Any = None, title: str = "") -> Any:
    """Gradient norm at the first block against depth, one curve per network kind, log scale."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for label, norms in curves.items():
        ax.semilogy(depths, norms, marker="o", label=label)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("||dL/dx|| at the first block")
    ax.set_title(title or "gradient at the first block, at initialisation")
    ax.legend()
    return ax


# -- the lost figures: block diagrams -------------------------------------------------------------------
_BLOCKS = {
    "basic block": (["3x3 conv", "BN", "ReLU", "3x3 conv", "BN"], "identity", True),
    "bottleneck": (["1x1 conv (reduce)", "BN", "ReLU", "3x3 conv", "BN", "ReLU", "1x1 conv (expand x4)", "BN"],
                   "identity", True),
    "pre-activation": (["BN", "ReLU", "3x3 conv", "BN", "ReLU", "3x3 conv"], "identity", False),
    "option A (shape changes)": (["3x3 conv, stride 2", "BN", "ReLU", "3x3 conv", "BN"],
                                 "subsample x[:, :, ::2, ::2]\n+ zero channels", True),
    "option B (shape changes)": (["3x3 conv, stride 2", "BN", "ReLU", "3x3 conv", "BN"],
                                 "1x1 conv, stride 2\n+ BN", True),
}


def draw_blocks(kinds: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None) -> Any:
    """The residual blocks as the lecture drew them: the residual branch on the left, the shortcut on
    the right, the addition, and (post-activation) the ReLU after it. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    kinds = list(kinds or _BLOCKS)
    fig, axes = plt.subplots(1, len(kinds), figsize=figsize or (3.0 * len(kinds), 6.5))
    axes = np.atleast_1d(axes)
    colours = {"conv": "#cfe2f3", "BN": "#fff2cc", "ReLU": "#d9ead3"}
    for ax, kind in zip(axes, kinds):
        layers, shortcut, relu_after = _BLOCKS[kind]
        n = len(layers)
        top, step = 0.93, 0.72 / n
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_axis_off()
        ax.set_title(kind, fontsize=11)
        ax.annotate("x", (0.35, top + 0.04), ha="center", fontsize=11)
        ys = [top - (i + 0.5) * step for i in range(n)]
        for y, layer in zip(ys, layers):
            colour = next((c for key, c in colours.items() if key in layer), "#eeeeee")
            ax.add_patch(FancyBboxPatch((0.08, y - step * 0.32), 0.54, step * 0.64, boxstyle="round,pad=0.01",
                                        fc=colour, ec="0.3"))
            ax.text(0.35, y, layer, ha="center", va="center", fontsize=8.5)
        for a, b in zip([top] + ys[:-1], ys):
            ax.annotate("", (0.35, b + step * 0.33), (0.35, a - (step * 0.33 if a != top else 0.0)),
                        arrowprops=dict(arrowstyle="-|>", color="0.3"))
        add_y = ys[-1] - step * 0.9
        ax.add_patch(plt.Circle((0.35, add_y), 0.035, fc="white", ec="0.2"))
        ax.text(0.35, add_y, "+", ha="center", va="center", fontsize=13)
        ax.annotate("", (0.35, add_y + 0.035), (0.35, ys[-1] - step * 0.33), arrowprops=dict(arrowstyle="-|>", color="0.3"))
        # the shortcut: out to the right, down, and into the addition
        ax.plot([0.35, 0.82, 0.82], [top + 0.02, top + 0.02, add_y], color="#cc0000", lw=1.6)
        ax.annotate("", (0.385, add_y), (0.82, add_y), arrowprops=dict(arrowstyle="-|>", color="#cc0000", lw=1.6))
        ax.text(0.84, (top + add_y) / 2, shortcut, rotation=90, ha="left", va="center", fontsize=8.5, color="#cc0000")
        end = add_y - 0.035
        if relu_after:
            ax.add_patch(FancyBboxPatch((0.2, add_y - 0.12), 0.3, 0.05, boxstyle="round,pad=0.01", fc=colours["ReLU"],
                                        ec="0.3"))
            ax.text(0.35, add_y - 0.095, "ReLU", ha="center", va="center", fontsize=8.5)
            ax.annotate("", (0.35, add_y - 0.07), (0.35, end), arrowprops=dict(arrowstyle="-|>", color="0.3"))
            end = add_y - 0.12
        ax.annotate("", (0.35, end - 0.05), (0.35, end), arrowprops=dict(arrowstyle="-|>", color="0.3"))
        ax.text(0.35, end - 0.075, "nothing after the addition" if not relu_after else "output", ha="center",
                fontsize=8, color="0.35")
    fig.tight_layout()
    return fig
