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

from .checks import CheckFailed, beside, call, expect_true, is_a

__all__ = [
    "BlockCase",
    "CASES_PATH",
    "HINTS",
    "branch_ratios",
    "check_block",
    "check_grad_norms",
    "check_network",
    "check_zero_gamma",
    "count_macs",
    "count_parameters",
    "draw_blocks",
    "fit_identity",
    "fit_rate",
    "first_to_last_ratios",
    "load_cases",
    "make_case",
    "meta_device",
    "make_grad_case",
    "make_network_case",
    "torch_conv_cost",
    "plot_grad_norms",
    "plot_identity",
    "save_cases",
    "stage_shapes",
]

CASES_PATH = Path(__file__).resolve().parent / "data" / "resnet_cases.npz"
RTOL, ATOL = 1e-4, 1e-5

# The usual mistakes: keyword arguments that make the course's reference commit them (the hidden tests
# run these), and the sentence a student sees when a block's output matches one of them.
SHORTCUT_VARIANTS = {"stride_ignored": {"stride_ignored": True}, "pad_front": {"pad_front": True}}
BLOCK_VARIANTS = {"relu_before_add": {"relu_before_add": True}}
BOTTLENECK_VARIANTS = {"relu_before_add": {"relu_before_add": True}}  # and stride_place, per case: see variants_for
PREACT_VARIANTS = {"relu_after_add": {"relu_after_add": True}}
HINTS = {
    "relu_before_add": "it applies ReLU to the residual branch before the addition. The branch ends with BN; "
                       "ReLU comes after F(x) + x.",
    "relu_after_add": "it applies ReLU after the addition. A pre-activation block ends with the addition: "
                      "nothing after it, so the shortcut stays a pure identity.",
    "pad_front": "the zero channels come first. Append them after the input's channels.",
    "stride_ignored": "the shortcut does not subsample. Keep every stride-th pixel, x[:, :, ::stride, ::stride].",
    "shape": "Where the block downsamples, the residual branch's first strided layer and the shortcut both "
             "need the block's stride.",
    "project_always": "A projection belongs only where the shape changes (stride != 1 or a new number of "
                      "channels); elsewhere the shortcut is nn.Identity(), with no parameters.",
    "missing_projection": "Where the shape changes, option B's shortcut is nn.Sequential(1x1 conv with the "
                          "block's stride, BatchNorm2d): shortcut.0 and shortcut.1.",
    "option_a": "Option A's shortcut has no parameters: your ShortcutA (subsample and zero channels), not a "
                "projection.",
    "stride_place": "the stride sits on the wrong convolution: stride_in_1x1=False puts it on the 3x3 (conv2), "
                    "True on the first 1x1 (conv1).",
    "expand_twice": "Expand only at the end: conv1 reduces to planes channels, conv2 (3x3) keeps planes, and "
                    "only conv3 expands to 4 * planes.",
}
IMAGENET_SHAPES = {
    18: {"stem": (1, 64, 56, 56), "layer1": (1, 64, 56, 56), "layer2": (1, 128, 28, 28), "layer3": (1, 256, 14, 14),
         "layer4": (1, 512, 7, 7)},
    34: {"stem": (1, 64, 56, 56), "layer1": (1, 64, 56, 56), "layer2": (1, 128, 28, 28), "layer3": (1, 256, 14, 14),
         "layer4": (1, 512, 7, 7)},
}
for _depth in (50, 101, 152):
    IMAGENET_SHAPES[_depth] = {"stem": (1, 64, 56, 56), "layer1": (1, 256, 56, 56), "layer2": (1, 512, 28, 28),
                               "layer3": (1, 1024, 14, 14), "layer4": (1, 2048, 7, 7)}


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
        wrong = factory(**{**kwargs, **extra})
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
        shortcut = lambda names: bool(names) and all("shortcut." in n for n in names)  # noqa: E731
        if shortcut(extra) and not missing:
            hint = hints.get("option_a", "") if case.kwargs.get("option") == "A" else hints.get("project_always", "")
        elif shortcut(missing) and not extra:
            hint = hints.get("missing_projection", "")
        else:
            hint = f"Name the layers as the docstring says ({', '.join(sorted({n.split('.')[0] for n in want}))})."
        raise CheckFailed(f"{what}: {'; '.join(parts)}. {hint}".strip())
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
    out = _as_tensor(_forward(block, x, what, hints), f"the output of {what}")
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
    call(block.load_state_dict, case.state, name=f"{what}.load_state_dict")  # training moved the running stats
    call(block.eval, name=f"{what}.eval")
    with torch.no_grad():
        out_eval = _as_tensor(call(block, case.x.clone(), name=what), f"the output of {what}")
    if not _close(out_eval, case.out_eval):
        raise CheckFailed(f"{what} gives the wrong output in inference mode (.eval()): use nn.BatchNorm2d "
                          "layers, which switch to their running statistics.")


def _forward(block: Any, x: Any, what: str, hints: dict[str, str]) -> Any:
    """``block(x)``; a shape mismatch inside the block's own addition is named as such."""
    __tracebackhide__ = True
    try:
        return call(block, x, name=what)
    except CheckFailed as exc:
        if "must match the size of tensor" in str(exc) or "size of tensor a" in str(exc):
            raise CheckFailed(f"{exc} The two paths of {what} do not have the same shape at the addition. "
                              f"{hints.get('shape', '')}".strip()) from None
        raise


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


# -- whole networks ------------------------------------------------------------------------------------------
def make_network_case(factory: Callable[[], Any], x_shape: Sequence[int], seed: int, *,
                      variants: dict[str, Callable[[], Any]] | None = None) -> BlockCase:
    """A case for a whole network from a *reference* ``factory``: seeded weights, an input, its outputs.

    ``variants`` maps the name of a mistake to a factory of the network that makes it (same weights).
    """
    case = make_case(lambda: factory(), {}, x_shape, seed)
    import torch

    for mistake, wrong_factory in (variants or {}).items():
        wrong = wrong_factory()
        wrong.load_state_dict(case.state)
        wrong.train()
        with torch.no_grad():
            case.variants[mistake] = wrong(case.x)
    return case


NETWORK_HINTS = {
    "output": "Check the order of the stages, the stride of each stage's first block, and the head "
              "(global average pooling, then fc).",
    "shape": "The output should be one score per class for every image.",
    "project_always": "A block projects only where its shape changes: the first block of a stage strides only "
                      "from layer2 on, and changes channels only where the stage's width differs from its input's.",
    "plain_adds": "the plain twin has no shortcuts: its blocks are BasicBlock(..., option=None), with no addition.",
}


def check_network(make: Callable[[], Any], case: BlockCase, what: str, hints: dict[str, str] | None = None) -> None:
    """Build the student's network with ``make()``, load the case's weights by name, compare its outputs."""
    __tracebackhide__ = True
    check_block(lambda: make(), case, what, {**NETWORK_HINTS, **(hints or {})})


def check_zero_gamma(block_class: Any, case: BlockCase, last_bn: str, what: str) -> None:
    """With the last BN's gamma (and beta) at 0 the residual branch outputs 0: the block must be ReLU(shortcut(x))."""
    __tracebackhide__ = True
    import torch

    block = _construct(block_class, case.kwargs, what)
    state = {k: v.clone() for k, v in case.state.items()}
    state[f"{last_bn}.weight"].zero_()
    state[f"{last_bn}.bias"].zero_()
    call(block.load_state_dict, state, name=f"{what}.load_state_dict")
    call(block.train, name=f"{what}.train")
    with torch.no_grad():
        out = call(block, case.x, name=what)
        shortcut = call(block.shortcut, case.x, name=f"{what}.shortcut")
    expect_true(_close(out, torch.relu(shortcut)),
                f"with {last_bn}'s gamma = 0 the residual branch outputs 0, so {what} should return "
                "ReLU(shortcut(x)); it does not. The shortcut is added to the branch's output before the last ReLU.")


def make_grad_case(depth: int, residual: bool, factory: Callable[[int, bool], Any],
                   measure: Callable[..., Sequence[float]], seed: int, batch: int = 4) -> BlockCase:
    """A case for the gradient-norm exercise: a *reference* CIFAR network ``factory(depth, residual)`` with
    seeded weights, a batch of images ``x`` and labels (in ``dy``), and the reference ``measure``'s norms."""
    import torch

    g = torch.Generator().manual_seed(seed)
    model = factory(depth, residual)
    state = _random_state(model, g)
    model.load_state_dict(state)
    model.train()
    x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    norms = torch.tensor(measure(model, _blocks_of(model), x, y))
    return BlockCase("grads", {"depth": depth, "residual": residual}, state, x, y, norms, norms, norms)


def _blocks_of(model: Any) -> list[Any]:
    return [b for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name)
            for b in getattr(model, name)]


def check_grad_norms(measure: Callable[..., Any], case: BlockCase, what: str) -> None:
    """The student's ``measure(model, blocks, x, y)`` on the package's CIFAR network with the case's weights."""
    __tracebackhide__ = True
    import torch

    from . import models

    # The network must live beside the student's function (in the grading command: in the student's process).
    model = beside(measure, models.cifar_net, case.kwargs["depth"], residual=case.kwargs["residual"])
    model.load_state_dict(case.state)
    model.train()
    blocks = _blocks_of(model)
    got = call(measure, model, blocks, case.x, case.dy, name="block_input_grad_norms")
    expect_true(isinstance(got, (list, tuple)) and len(got) == len(case.out),
                f"block_input_grad_norms should return one number per block ({len(case.out)} for {what}), "
                f"but returned {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""))
    values = torch.tensor([float(v) for v in got])
    if not torch.allclose(values, case.out, rtol=1e-3, atol=1e-7):
        worst = int((values - case.out).abs().argmax())
        if torch.allclose(values.flip(0), case.out, rtol=1e-3):
            hint = " They are in reverse order: the first number is the first block's."
        elif torch.allclose(values, case.out * len(case.x), rtol=1e-3):
            hint = f" They are {len(case.x)} times too large: use the mean loss over the batch, not the sum."
        elif torch.allclose(values[:-1], case.out[1:], rtol=1e-3):
            hint = " They are shifted by one block: take each block's input, not its output."
        else:
            hint = (" The loss is F.cross_entropy(model(x), y); the norm is of the whole gradient tensor at each "
                    "block's input (its first argument).")
        raise CheckFailed(f"the gradient norm at block {worst + 1} of {what} is wrong: expected "
                          f"{float(case.out[worst]):.6g}, got {float(values[worst]):.6g}.{hint}")
    leftover = sum(len(b._forward_pre_hooks) + len(b._forward_hooks) for b in blocks)
    expect_true(leftover == 0, f"block_input_grad_norms left {leftover} hook(s) on the blocks: remove them "
                               "(handle.remove()) before returning, or the next forward pass runs them again.")


def torch_conv_cost(h: int, w: int, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0
                    ) -> tuple[tuple[int, ...], int]:
    """(output shape, multiplications) of a convolution, from PyTorch itself: the shape of its output on the
    meta device, and half the FLOPs its FLOP counter reports (one multiply-add is two FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(1, c_in, h, w, device="meta")
    weight = torch.empty(c_out, c_in, k, k, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding)
    return tuple(out.shape), counter.get_total_flops() // 2


def family_hint(difference: int) -> str:
    """Name the likely cause of a ResNet's parameter count being off by ``difference``."""
    if difference == 0:
        return ""
    if difference > 0:
        return ("Too many: projections on blocks whose shape does not change, biases on convolutions "
                "(bias=False), or bottlenecks that expand twice?")
    return "Too few: a missing stage or block, or a missing projection where a stage's first block changes shape?"


def macs_hint(got: int, want: int) -> str:
    if got == want:
        return ""
    return ("Every convolution counts, projections included, and the fully connected layer counts in x out; "
            "where the stride sits changes the 3x3's cost.")


# -- counting -----------------------------------------------------------------------------------------
class meta_device:
    """``with meta_device(anchor):`` tensors made by the code where ``anchor`` runs live on PyTorch's meta
    device: shapes without memory or arithmetic, so building ResNet-152 to count it costs nothing.

    (``anchor`` is a student's function: in the grading command the student's code runs in another
    process, and the default device is set there.)
    """

    def __init__(self, anchor: Any) -> None:
        self.anchor = anchor

    def __enter__(self) -> "meta_device":
        import torch

        beside(self.anchor, torch.set_default_device, "meta")
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        beside(self.anchor, torch.set_default_device, "cpu")


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
                 weight_decay: float = 1.0, seed: int = 0) -> list[float]:
    """Train ``model`` to reproduce its input: x ~ N(0, 1)^width, loss ||model(x) - x||^2 / ||x||^2 (mean).

    AdamW (decoupled weight decay), a fresh batch every step; returns the loss of every step.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        x = torch.randn(batch, width, generator=g)
        loss = ((model(x) - x) ** 2).sum(dim=1).div(x.pow(2).sum(dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def branch_ratios(stack: Any, x: Any) -> list[float]:
    """||F(x_l)|| / ||x_l|| for every residual block of ``stack`` (modules with a ``branch``), on input x."""
    import torch

    ratios = []
    with torch.no_grad():
        h = x
        for block in stack:
            f = block.branch(h)
            ratios.append(float(f.norm() / h.norm()))
            h = block(h)
    return ratios


def plot_identity(curves: dict[str, list[float]], *, before: Sequence[float] | None = None,
                  after: Sequence[float] | None = None, title: str = "") -> Any:
    """Left: loss curves of :func:`fit_identity` (log axis). Right, if given: :func:`branch_ratios` before and
    after training. Returns the figure."""
    import matplotlib.pyplot as plt

    panels = 2 if before is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2))
    axes = np.atleast_1d(axes)
    for label, losses in curves.items():
        axes[0].semilogy(np.arange(1, len(losses) + 1), losses, label=label)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("relative error ||f(x) - x||² / ||x||²")
    axes[0].set_title(title or "learning the identity")
    axes[0].legend()
    if before is not None:
        blocks = np.arange(1, len(before) + 1)
        axes[1].bar(blocks - 0.2, before, width=0.4, label="at initialisation")
        axes[1].bar(blocks + 0.2, after, width=0.4, label="after training")
        axes[1].set_xlabel("residual block")
        axes[1].set_ylabel("||F(x)|| / ||x||")
        axes[1].set_title("size of each residual branch, relative to its input")
        axes[1].legend()
    fig.tight_layout()
    return fig


# -- gradient flow -----------------------------------------------------------------------------------------
def first_to_last_ratios(measure: Callable[..., Sequence[float]], build: Callable[[int], Any],
                         depths: Sequence[int], *, batch: int = 8, seed: int = 0) -> np.ndarray:
    """||dL/dx_1|| / ||dL/dx_L||, first block over last block, of ``build(depth)`` at initialisation.

    ``measure(model, blocks, x, y)`` returns the norm at every block's input (notebook 04's exercise);
    the blocks are the model's ``layer1``, ``layer2``, ``layer3`` children in order. The input is a
    batch of random 32x32 images with random labels, the model in training mode.
    """
    import torch

    ratios = []
    for depth in depths:
        torch.manual_seed(seed)
        model = build(depth)
        model.train()
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        norms = list(measure(model, _blocks_of(model), x, y))
        ratios.append(float(norms[0]) / float(norms[-1]))
    return np.asarray(ratios)


def fit_rate(depths: Sequence[int], norms: Sequence[float], blocks_per_depth: Callable[[int], int] | None = None
             ) -> tuple[float, float]:
    """Least-squares fit of log(norm) = log(C) + b log(rate), b the number of blocks: returns (C, rate).

    Notebook 02's method (a straight line through the logarithms), with the number of blocks
    ``(depth - 2) / 2`` of a CIFAR network as the exponent unless told otherwise.
    """
    blocks = np.asarray([(blocks_per_depth or (lambda d: (d - 2) // 2))(d) for d in depths], dtype=float)
    slope, intercept = np.polyfit(blocks, np.log(np.asarray(norms, dtype=float)), 1)
    return float(np.exp(intercept)), float(np.exp(slope))


def plot_grad_norms(depths: Sequence[int], curves: dict[str, np.ndarray], *, rates: dict[str, float] | None = None,
                    ax: Any = None, title: str = "") -> Any:
    """First-block over last-block gradient norm against depth, one curve per network kind, log scale;
    with ``rates``, each label shows its fitted factor per block."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.8))
    for label, values in curves.items():
        shown = label + (f"  ({rates[label]:.3f} per block)" if rates and label in rates else "")
        ax.semilogy(depths, values, marker="o", label=shown)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("||dL/dx_1|| / ||dL/dx_L||")
    ax.set_title(title or "gradient at the first block relative to the last, at initialisation")
    ax.legend(fontsize=9)
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
