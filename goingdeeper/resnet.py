"""Notebook 04's machinery: block checks, counting, the two experiments, and the lost block diagrams.

* **Checks.** A :class:`BlockCase` is a block with known weights (and running statistics), an input,
  the upstream gradient, and how the course's reference builds it (and the usual wrong versions, so
  that a failing check can say which mistake it sees). :func:`check_block` loads a case into a
  student's block and compares it with what :func:`expected` computes there and then: the reference
  in float64 on the same inputs (no expected values are stored, so no grade depends on the machine
  that made them). The visible tests read their cases (inputs only) from
  ``goingdeeper/data/resnet_cases.npz``; the hidden tests make fresh ones with :func:`make_case`.
  Without the reference (the student edition) the checks test what needs none and say so.
* **Counting.** :func:`count_parameters`, :func:`stage_shapes` (on PyTorch's ``meta`` device: shapes
  without arithmetic), :func:`count_macs` (multiply-adds, with a given cost function per layer).
* **Experiments.** :func:`fit_identity` trains a deep stack to reproduce its input;
  :func:`first_block_grad_norms` measures the gradient at the first block of CIFAR networks of growing
  depth, at initialisation; :func:`plot_grad_norms` draws them with a fitted per-block rate.
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

from .checks import CheckFailed, beside, call, expect_close, expect_true, is_a

__all__ = [
    "BlockCase",
    "CASES_PATH",
    "HINTS",
    "branch_ratios",
    "check_block",
    "check_conv_cost",
    "check_grad_norms",
    "check_gradient_correlation",
    "check_gradient_correlation_on",
    "check_lecture_1x1",
    "check_network",
    "check_zero_gamma",
    "count_macs",
    "count_parameters",
    "draw_blocks",
    "conditioning",
    "expected",
    "fit_identity",
    "first_steps",
    "first_to_last_ratios",
    "load_cases",
    "make_case",
    "meta_device",
    "make_grad_case",
    "make_network_case",
    "plot_first_steps",
    "plot_grad_norms",
    "plot_gradient_correlation",
    "plot_identity",
    "reference_or_none",
    "save_cases",
    "stage_shapes",
    "synthetic_images",
]

CASES_PATH = Path(__file__).resolve().parent / "data" / "resnet_cases.npz"

# The usual mistakes: keyword arguments that make the course's reference commit them (the hidden tests
# run these), and the sentence a student sees when a block's output matches one of them.
SHORTCUT_VARIANTS = {"stride_ignored": {"stride_ignored": True}, "pad_front": {"pad_front": True}}
BLOCK_VARIANTS = {"relu_before_add": {"relu_before_add": True}, "no_final_relu": {"no_final_relu": True},
                  "relu_then_bn": {"relu_then_bn": True}}
BOTTLENECK_VARIANTS = {"relu_before_add": {"relu_before_add": True}}  # and stride_place, per case: see variants_for
PREACT_VARIANTS = {"relu_after_add": {"relu_after_add": True}, "post_activation": {"post_activation": True}}
HINTS = {
    "relu_before_add": "it applies ReLU to the residual branch before the addition. The branch ends with BN; "
                       "ReLU comes after F(x) + x.",
    "relu_after_add": "it applies ReLU after the addition. A pre-activation block ends with the addition: "
                      "nothing after it, so the shortcut stays a pure identity.",
    "post_activation": "it keeps the post-activation order conv-BN-ReLU. A pre-activation block puts BN and ReLU "
                       "before each convolution: BN-ReLU-conv, BN-ReLU-conv, then the addition.",
    "no_final_relu": "it has no ReLU after the addition. The original block ends with ReLU(F(x) + x).",
    "relu_then_bn": "it applies ReLU before BN after the first convolution. The order is conv-BN-ReLU.",
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
# A student's float32 result passes when its largest error against the reference computed in float64 is at most
# the tolerance times the reference's largest magnitude (one scale per tensor; per number for gradient norms).
# Measured, float32 against float64 for the reference itself, under ATEN_CPU_CAPABILITY default, avx2, avx512:
RTOL = 1e-3  # everything but the next line: at most 2e-5 (gradient norms of plain-20), 1e-6 for everything else
RTOL_TRAINING_NETWORK = 2e-2  # a whole network's training-mode output: BN batch statistics of 2 images through up
# to 100 layers amplify rounding, up to 6e-4 (ResNet-101, 8 seeds); eval output and dL/dx still check at RTOL
MARGIN = 10  # a case is used only where the reference's own float32 results are within tolerance / MARGIN of float64
ATTEMPTS = 10  # seeds tried (seed, seed + 100_000, ...) for a well-conditioned case (a ReLU input next to 0 is not)


@dataclass
class BlockCase:
    """One block (or network), fixed: how the reference builds it, its weights and running statistics
    ``state``, the input ``x`` and the upstream gradient ``dy`` (the labels, for a gradient-norm case).

    A case holds no expected values: :func:`expected` computes them where the check runs, from the
    course's reference in float64. ``reference`` is the reference's builder, ``{"factory": name in
    autograder/reference/resnet.py or a callable, "args": [...], "kwargs": {...}}`` (a gradient-norm case
    adds ``"measure"``); ``kwargs`` is what the student's constructor gets (``{}`` for a network, whose
    ``make()`` takes none). ``variants`` maps the name of a usual mistake to the builder of a reference that
    commits it (with the same weights). ``kind``: ``"block"`` (dL/dx checked in training mode),
    ``"network"`` (dL/dx in inference mode: in training mode it runs through the batch statistics of every
    BN, and through 50 or 100 layers that is ill-conditioned) or ``"grads"``.
    """

    name: str
    kwargs: dict[str, Any]
    state: dict[str, Any]
    x: Any
    dy: Any
    reference: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    kind: str = "block"
    seed: int | None = None
    _want: Any = field(default=None, repr=False, compare=False)  # expected(case) in float64, once computed


def reference_or_none() -> Any:
    """The course's reference (``autograder/reference/resnet.py``), or None where it does not ship: the student
    edition has neither autograder/ nor the package's grading module. Then the checks test what needs no
    reference and say that the values are compared when the notebook is graded."""
    try:
        from .grading import reference_if_present
    except ImportError:
        return None
    return reference_if_present("resnet")


def _resolve(factory: Any, ref: Any) -> Any:
    if callable(factory):
        return factory
    if ref is None:
        ref = reference_or_none()
        if ref is None:
            raise FileNotFoundError("the course's reference (autograder/reference/resnet.py) is not here: hidden "
                                    "tests run only where the course's autograder/ folder is")
    return getattr(ref, factory)


def _build(builder: dict[str, Any], ref: Any = None) -> Any:
    return _resolve(builder["factory"], ref)(*builder.get("args", ()), **builder.get("kwargs", {}))


def _builder(factory: Any) -> dict[str, Any]:
    """A network's builder: a dict as it is, else a function of no arguments."""
    return dict(factory) if isinstance(factory, dict) else {"factory": factory, "args": [], "kwargs": {}}


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


def _seeded_case(name: str, kwargs: dict[str, Any], builder: dict[str, Any], x_shape: Sequence[int], seed: int,
                 variants: dict[str, dict[str, Any]], kind: str) -> BlockCase:
    """Seeded weights, input and upstream gradient for what the reference ``builder`` makes; the variants whose
    weights load under the same names are kept. The first well-conditioned draw of :data:`ATTEMPTS` is used."""
    return _well_conditioned(lambda s: _draw(name, kwargs, builder, x_shape, s, variants, kind), seed)


def _well_conditioned(draw: Callable[[int], BlockCase], seed: int) -> BlockCase:
    """``draw(seed)``, or ``draw(seed + 100_000)``, ...: the first case on which the reference's float32 results
    agree with its float64 ones to within a :data:`MARGIN`-th of the tolerances. A case where, say, a ReLU's
    input lies within rounding of 0 (its gradient jumps there) would make a right float32 answer fail."""
    for attempt in range(ATTEMPTS):
        case = draw(seed + 100_000 * attempt)
        if max(conditioning(case).values(), default=0.0) <= 1 / MARGIN:
            return case
    raise RuntimeError(f"no well-conditioned case in {ATTEMPTS} seeds from {seed}")


def conditioning(case: BlockCase, ref: Any = None) -> dict[str, float]:
    """For each result the check compares: the reference's float32 error against float64, as a fraction of the
    check's tolerance (1.0: a float32 answer as good as the reference's would just pass)."""
    import torch

    ref = ref if ref is not None or _calls(case) else reference_or_none()
    want, got = expected(case, ref), expected(case, ref, torch.float32)
    if want is None or got is None:
        raise FileNotFoundError("the course's reference is missing")
    if case.kind == "grads":
        return {"norms": float(((got["norms"] - want["norms"]).abs() / want["norms"].abs()).max()) / RTOL}
    parts = {k: (got[k], want[k], _tolerance(case, k)) for k in ("out", "dx", "out_eval")}
    parts.update({f"variant {m}": (got["variants"][m], v, _tolerance(case, "out"))
                  for m, v in want["variants"].items()})
    return {k: _largest_error(g, w) / (rtol * float(w.abs().max())) if w.numel() and w.abs().max() > 0 else
            float(_largest_error(g, w) > 0) for k, (g, w, rtol) in parts.items()}


def _tolerance(case: BlockCase, part: str) -> float:
    return RTOL_TRAINING_NETWORK if case.kind == "network" and part == "out" else RTOL


def _draw(name: str, kwargs: dict[str, Any], builder: dict[str, Any], x_shape: Sequence[int], seed: int,
          variants: dict[str, dict[str, Any]], kind: str) -> BlockCase:
    import torch

    g = torch.Generator().manual_seed(seed)
    module = _build(builder)
    state = _random_state(module, g)
    x = torch.randn(*x_shape, generator=g)
    module.load_state_dict(state)
    module.train()
    with torch.no_grad():
        shape = module(x).shape  # only the shape: dy is drawn with it (the check reads the output's shape from dy)
    dy = torch.randn(shape, generator=g)
    kept = {}
    for mistake, wrong in variants.items():
        try:
            _build(wrong).load_state_dict(state)
        except RuntimeError:
            continue  # a different set of weights: the check of the names names that mistake
        kept[mistake] = wrong
    return BlockCase(name, dict(kwargs), state, x, dy, builder, kept, kind, seed)


def _calls(case: BlockCase) -> bool:
    builders = [case.reference, *case.variants.values()]
    return any(callable(b["factory"]) for b in builders) or callable(case.reference.get("measure"))


def make_case(factory: Callable[..., Any] | str, kwargs: dict[str, Any], x_shape: Sequence[int], seed: int, *,
              name: str = "", variants: dict[str, dict[str, Any]] | None = None) -> BlockCase:
    """A case for a *reference* block ``factory`` (a class, or its name in the reference) built with
    ``kwargs``: seeded weights, input and upstream gradient.

    ``variants`` maps the name of a mistake to extra keyword arguments that make the reference commit it;
    only variants whose weights load under the same names are kept.
    """
    builder = {"factory": factory, "args": [], "kwargs": dict(kwargs)}
    wrong = {m: {**builder, "kwargs": {**kwargs, **extra}} for m, extra in (variants or {}).items()}
    return _seeded_case(name, kwargs, builder, x_shape, seed, wrong, "block")


def make_network_case(factory: Callable[[], Any] | dict[str, Any], x_shape: Sequence[int], seed: int, *,
                      variants: dict[str, Callable[[], Any] | dict[str, Any]] | None = None) -> BlockCase:
    """A case for a whole network from a *reference* ``factory`` (a function of no arguments, or a builder
    ``{"factory": name, "args": [...], "kwargs": {...}}``): seeded weights, an input, an upstream gradient.

    ``variants`` maps the name of a mistake to the factory (or builder) of the network that makes it.
    """
    wrong = {m: _builder(f) for m, f in (variants or {}).items()}
    return _seeded_case("", {}, _builder(factory), x_shape, seed, wrong, "network")


def make_grad_case(depth: int, residual: bool, factory: Callable[[int, bool], Any] | str,
                   measure: Callable[..., Sequence[float]] | str, seed: int, batch: int = 4) -> BlockCase:
    """A case for the gradient-norm exercise: a *reference* CIFAR network ``factory(depth, residual)`` with
    seeded weights, a batch of images ``x`` and labels (in ``dy``); the reference ``measure`` gives the norms."""
    import torch

    builder = {"factory": factory, "args": [depth, residual], "kwargs": {}, "measure": measure}

    def draw(seed: int) -> BlockCase:
        g = torch.Generator().manual_seed(seed)
        state = _random_state(_build(builder), g)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        return BlockCase("grads", {"depth": depth, "residual": residual}, state, x, y, builder, {}, "grads", seed)

    return _well_conditioned(draw, seed)


def expected(case: BlockCase, ref: Any = None, dtype: Any = None) -> dict[str, Any] | None:
    """What the reference computes for ``case``, in ``dtype`` (float64 unless told; cached), in this process.

    Blocks and networks: ``out`` and ``out_eval`` (training and inference mode), ``dx`` (dL/dx for
    L = sum(out * dy): in training mode for a block, in inference mode for a network), ``variants`` (the
    training-mode outputs of the usual mistakes). Gradient-norm cases: ``norms``. None where the case names
    its reference and the course's reference is not here (the student edition).
    """
    import torch

    dtype = dtype or torch.float64
    if dtype == torch.float64 and case._want is not None:
        return case._want
    if ref is None and not _calls(case):
        ref = reference_or_none()
        if ref is None:
            return None
    with torch.enable_grad():
        want = _compute(case, ref, dtype)
    if dtype == torch.float64:
        case._want = want
    return want


def _compute(case: BlockCase, ref: Any, dtype: Any) -> dict[str, Any]:
    import torch

    state = {k: v.to(dtype) if v.is_floating_point() else v.clone() for k, v in case.state.items()}
    x = case.x.to(dtype)
    module = _build(case.reference, ref).to(dtype)
    module.load_state_dict(state)
    module.train()
    if case.kind == "grads":
        measure = _resolve(case.reference["measure"], ref)
        return {"norms": torch.tensor([float(v) for v in measure(module, _blocks_of(module), x, case.dy)],
                                      dtype=torch.float64)}
    dy = case.dy.to(dtype)
    xg = x.clone().requires_grad_(True)
    out = module(xg)
    want = {"out": out.detach()}
    if case.kind == "block":
        (out * dy).sum().backward()
        want["dx"] = xg.grad.detach()
    module.load_state_dict(state)  # the forward pass moved the running statistics
    module.eval()
    xg = x.clone().requires_grad_(True)
    out_eval = module(xg)
    want["out_eval"] = out_eval.detach()
    if case.kind == "network":
        (out_eval * dy).sum().backward()
        want["dx"] = xg.grad.detach()
    want["variants"] = {}
    for mistake, builder in case.variants.items():
        wrong = _build(builder, ref).to(dtype)
        try:
            wrong.load_state_dict(state)
        except RuntimeError:
            continue
        wrong.train()
        with torch.no_grad():
            try:
                want["variants"][mistake] = wrong(x)
            except RuntimeError:
                continue
    return want


def save_cases(cases: dict[str, BlockCase], path: Path = CASES_PATH) -> None:
    """Write cases to one ``.npz``: their inputs only (weights, x, dy as float32 or int64 arrays; the builders,
    variants, kwargs and seeds as JSON). Every case must name its reference's builders (no callables)."""
    import json

    arrays: dict[str, np.ndarray] = {}
    meta = {}
    for key, case in cases.items():
        if _calls(case):
            raise ValueError(f"case {key} is built by a callable: save only cases that name their reference")
        meta[key] = {"name": case.name, "kind": case.kind, "seed": case.seed, "kwargs": case.kwargs,
                     "reference": case.reference, "variants": case.variants, "state": list(case.state)}
        arrays[f"{key}|x"] = case.x.numpy()
        arrays[f"{key}|dy"] = case.dy.numpy()
        for name, value in case.state.items():
            arrays[f"{key}|state|{name}"] = value.numpy()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_cases(path: Path = CASES_PATH) -> dict[str, BlockCase]:
    """The cases of :func:`save_cases`, as tensors (their expected values are computed when checked)."""
    import json

    import torch

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        t = lambda key: torch.from_numpy(data[key].copy())  # noqa: E731
        return {key: BlockCase(m["name"], m["kwargs"], {n: t(f"{key}|state|{n}") for n in m["state"]},
                               t(f"{key}|x"), t(f"{key}|dy"), m["reference"], m["variants"], m["kind"], m["seed"])
                for key, m in meta.items()}


# -- checking a student's block ------------------------------------------------------------------------
def _largest_error(got: Any, want: Any) -> float:
    return float((got.detach().to(want.dtype) - want).abs().max()) if want.numel() else 0.0


def _close(got: Any, want: Any, rtol: float = RTOL) -> bool:
    """``got`` (the student's, any float dtype) has ``want``'s shape and is within rtol of it, on want's scale."""
    if tuple(got.shape) != tuple(want.shape):
        return False
    if not want.numel():
        return True
    return _largest_error(got, want) <= rtol * float(want.abs().max())


def _unchecked(what: str) -> None:
    """Say that the values were not compared here: the course's reference is not in this copy."""
    print(f"\u2022 {what}: the names, shapes and gradient path are checked here; its values are compared with the "
          "course's reference when the notebook is graded.")


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
    """Build the student's block, load the case's weights, and compare outputs and dL/dx in both modes with the
    reference's, computed here in float64 (:func:`expected`).

    ``hints`` maps the name of a mistake (a key of ``case.variants``, or 'project_always',
    'expand_twice', 'missing_projection', 'shape') to the sentence a student sees when it is found.
    Without the course's reference (the student edition) the names, shapes and the gradient's path are
    checked, and a line says that the values are compared when the notebook is graded.
    """
    __tracebackhide__ = True
    import torch

    hints = hints or {}
    want = expected(case)
    network = case.kind == "network"
    block = _construct(make_block, case.kwargs, what)
    check_state_names(block, case, what, hints)
    call(block.load_state_dict, case.state, name=f"{what}.load_state_dict")
    call(block.train, name=f"{what}.train")
    x = case.x.clone().requires_grad_(True)
    out = _as_tensor(_forward(block, x, what, hints), f"the output of {what}")
    shape = tuple(case.dy.shape)  # the upstream gradient has the output's shape
    if tuple(out.shape) != shape:
        raise CheckFailed(f"{what} returns shape {tuple(out.shape)} for an input of shape {tuple(case.x.shape)}; "
                          f"it should be {shape}. {hints.get('shape', '')}".strip())
    rtol = _tolerance(case, "out")
    if want is not None and not _close(out, want["out"], rtol):
        for mistake, wrong in want["variants"].items():
            if _close(out, wrong, rtol):
                raise CheckFailed(f"{what} computes the wrong function: {hints.get(mistake, mistake)}")
        raise CheckFailed(f"{what} gives the wrong output in training mode (largest error "
                          f"{_largest_error(out, want['out']):.3g}). {hints.get('output', '')}".strip())
    expect_true(out.requires_grad, f"the output of {what} does not depend on its input through autograd: "
                                   "use torch operations on x (no .detach(), .numpy() or .item()).")
    if not network:
        (out * case.dy).sum().backward()
        _check_dx(x, want, what)
    call(block.load_state_dict, case.state, name=f"{what}.load_state_dict")  # training moved the running stats
    call(block.eval, name=f"{what}.eval")
    x = case.x.clone().requires_grad_(network)
    with torch.set_grad_enabled(network):
        out_eval = _as_tensor(call(block, x, name=what), f"the output of {what}")
    if not (_close(out_eval, want["out_eval"]) if want is not None else tuple(out_eval.shape) == shape):
        raise CheckFailed(f"{what} gives the wrong output in inference mode (.eval()): use nn.BatchNorm2d "
                          "layers, which switch to their running statistics.")
    if network:
        expect_true(out_eval.requires_grad, f"the output of {what} in inference mode does not depend on its "
                                            "input through autograd.")
        (out_eval * case.dy).sum().backward()
        _check_dx(x, want, f"{what} in inference mode")
    if want is None:
        _unchecked(what)


def _check_dx(x: Any, want: dict[str, Any] | None, what: str) -> None:
    __tracebackhide__ = True
    expect_true(x.grad is not None, f"no gradient reached the input of {what}.")
    if want is not None and not _close(x.grad, want["dx"]):
        raise CheckFailed(f"dL/dx through {what} is wrong (largest error {_largest_error(x.grad, want['dx']):.3g}): "
                          "the backward pass goes through every operation of forward, the shortcut included.")


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
NETWORK_HINTS = {
    "output": "Check the order of the stages, the stride of each stage's first block, and the head "
              "(global average pooling, then fc).",
    "shape": "The output should be one score per class for every image.",
    "project_always": "A block projects only where its shape changes: the first block of a stage strides only "
                      "from layer2 on, and changes channels only where the stage's width differs from its input's.",
    "plain_adds": "the plain twin has no shortcuts: its blocks are BasicBlock(..., option=None), with no addition.",
}


def check_network(make: Callable[[], Any], case: BlockCase, what: str, hints: dict[str, str] | None = None) -> None:
    """Build the student's network with ``make()``, load the case's weights by name, compare its outputs in both
    modes and dL/dx in inference mode."""
    __tracebackhide__ = True
    check_block(lambda: make(), case, what, {**NETWORK_HINTS, **(hints or {})})


def check_zero_gamma(block_class: Any, case: BlockCase, last_bn: str, what: str) -> None:
    """With the last BN's gamma (and beta) at 0 the residual branch outputs 0: the block must be ReLU(shortcut(x)).

    A property of the student's own block (compared with its own shortcut), so it needs no reference."""
    __tracebackhide__ = True
    import torch

    block = _construct(block_class, case.kwargs, what)
    state = {k: v.clone() for k, v in case.state.items()}
    state[f"{last_bn}.weight"].zero_()
    state[f"{last_bn}.bias"].zero_()
    call(block.load_state_dict, state, name=f"{what}.load_state_dict")
    call(block.train, name=f"{what}.train")
    with torch.no_grad():
        out = _as_tensor(call(block, case.x, name=what), f"the output of {what}")
        shortcut = _as_tensor(call(block.shortcut, case.x, name=f"{what}.shortcut"), f"the output of {what}.shortcut")
    expect_true(_close(out, torch.relu(shortcut.to(torch.float64))),
                f"with {last_bn}'s gamma = 0 the residual branch outputs 0, so {what} should return "
                "ReLU(shortcut(x)); it does not. The shortcut is added to the branch's output before the last ReLU.")


def _blocks_of(model: Any) -> list[Any]:
    return [b for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name)
            for b in getattr(model, name)]


def _near(got: Any, want: Any) -> bool:
    """Every gradient norm within RTOL of the reference's, each on its own scale (the norms of a plain network
    differ from block to block by orders of magnitude)."""
    return tuple(got.shape) == tuple(want.shape) and bool(((got - want).abs() <= RTOL * want.abs()).all())


def _hooks_left(model: Any) -> int:
    """Hooks registered on ``model`` or any of its modules, and torch's global module hooks."""
    from torch.nn.modules import module as torch_module

    kinds = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
    count = sum(len(getattr(m, kind, {}) or {}) for m in model.modules() for kind in kinds)
    return count + sum(len(getattr(torch_module, f"_global{kind}", {}) or {}) for kind in kinds)


def check_grad_norms(measure: Callable[..., Any], case: BlockCase, what: str) -> None:
    """The student's ``measure(model, blocks, x, y)`` on the package's CIFAR network with the case's weights,
    against the reference's measurement on the reference's network, in float64."""
    __tracebackhide__ = True
    import torch

    from . import models

    want = expected(case)
    # The network must live beside the student's function (in the grading command: in the student's process).
    model = beside(measure, models.cifar_net, case.kwargs["depth"], residual=case.kwargs["residual"])
    model.load_state_dict(case.state)
    model.train()
    blocks = _blocks_of(model)
    got = call(measure, model, blocks, case.x, case.dy, name="block_input_grad_norms")
    expect_true(isinstance(got, (list, tuple)) and len(got) == len(blocks),
                f"block_input_grad_norms should return one number per block ({len(blocks)} for {what}), "
                f"but returned {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""))
    values = torch.tensor([float(v) for v in got], dtype=torch.float64)
    if want is None:
        expect_true(bool(torch.isfinite(values).all() and (values > 0).all()),
                    f"the gradient norms of {what} should be positive numbers, but they are {values.tolist()}.")
    elif not _near(values, want["norms"]):
        norms = want["norms"]
        worst = int(((values - norms).abs() / norms.abs()).argmax())
        if _near(values.flip(0), norms):
            hint = " They are in reverse order: the first number is the first block's."
        elif _near(values, norms * len(case.x)):
            hint = f" They are {len(case.x)} times too large: use the mean loss over the batch, not the sum."
        elif _near(values[:-1], norms[1:]):
            hint = " They are shifted by one block: take each block's input, not its output."
        else:
            hint = (" The loss is F.cross_entropy(model(x), y); the norm is of the whole gradient tensor at each "
                    "block's input (its first argument).")
        raise CheckFailed(f"the gradient norm at block {worst + 1} of {what} is wrong: expected "
                          f"{float(norms[worst]):.6g}, got {float(values[worst]):.6g}.{hint}")
    leftover = beside(measure, _hooks_left, model)
    expect_true(leftover == 0, f"block_input_grad_norms left {leftover} hook(s) registered on the network or its "
                               "modules: remove every one (handle.remove()) before returning, also when the forward "
                               "pass fails (try/finally), or the next forward pass runs them again.")
    if want is None:
        _unchecked(what)


def _conv_checks() -> tuple[Callable[..., None], Callable[..., None]]:
    """The two checks of what a convolution costs. Their oracle is PyTorch's own count, a local of this function:
    the shape of a convolution's output on the meta device, and half the FLOPs its FLOP counter reports (one
    multiply-add is two FLOPs). Nothing the student can import returns a convolution's cost."""

    def torch_cost(h: int, w: int, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0
                   ) -> tuple[tuple[int, ...], int]:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        x = torch.empty(1, c_in, h, w, device="meta")
        weight = torch.empty(c_out, c_in, k, k, device="meta")
        with FlopCounterMode(display=False) as counter:
            out = torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding)
        return tuple(out.shape), counter.get_total_flops() // 2

    def size_hint(got: Any, n: int, k: int, s: int, p: int) -> str:
        """What a wrong output size says about the formula (the usual slips: rounding up, forgetting the + 1)."""
        if got == -(-(n + 2 * p - k) // s) + 1:
            return "That is rounding up: a position counts only where the whole kernel fits, so round down (//)."
        if got == (n + 2 * p - k) // s:
            return "That is one short: the first position of the kernel counts too (+ 1)."
        return "Count the positions of the kernel on the padded input."

    def check_conv_cost(conv_output_size: Callable, conv_multiplies: Callable,
                        cases: Sequence[tuple[int, int, int, int, int, int, int]], tag: str = "") -> None:
        """``conv_output_size(n, k, stride, padding)`` and ``conv_multiplies(h, w, c_in, c_out, k, stride,
        padding)`` for each case (h, w, c_in, c_out, k, stride, padding), against PyTorch's output shape and FLOP
        counter (computed before the student's code runs)."""
        __tracebackhide__ = True
        for h, w, ci, co, k, st, p in cases:
            want_shape, want_mults = torch_cost(h, w, ci, co, k, st, p)
            where = f"{tag} for a {k}x{k} convolution, stride {st}, padding {p}, on {h}x{w}x{ci} -> {co} channels"
            for n, want_n in ((h, want_shape[2]), (w, want_shape[3])):
                got_n = call(conv_output_size, n, k, st, p, name="conv_output_size")
                expect_true(got_n == want_n, f"conv_output_size({n}, k={k}, stride={st}, padding={p}) is {got_n}{tag}, "
                            f"but PyTorch's output has {want_n} positions. " + size_hint(got_n, n, k, st, p))
            got_m = call(conv_multiplies, h, w, ci, co, k, st, p, name="conv_multiplies")
            expect_close(got_m, want_mults, "conv_multiplies" + where, rtol=0,
                         hint="Every output value (h' x w' x c_out of them) is a dot product over a k x k x c_in patch.")

    def check_lecture_1x1(direct: Any, reduce: Any, expand: Any, total: Any, speedup: Any) -> None:
        """The lecture's 1x1 example (28x28x192 -> 32 channels by a 5x5 convolution, or through 16 channels):
        the costs, their sum and ratio, against PyTorch's FLOP counter."""
        __tracebackhide__ = True
        want_direct = torch_cost(28, 28, 192, 32, 5, 1, 2)[1]
        want_reduce = torch_cost(28, 28, 192, 16, 1, 1, 0)[1]
        want_expand = torch_cost(28, 28, 16, 32, 5, 1, 2)[1]
        expect_close(direct, want_direct, "direct", rtol=0, hint="The 5x5 convolution from 192 to 32 channels, padding 2.")
        expect_close(reduce, want_reduce, "reduce", rtol=0, hint="The 1x1 convolution from 192 to 16 channels.")
        expect_close(expand, want_expand, "expand", rtol=0, hint="The 5x5 convolution from 16 to 32 channels, padding 2.")
        expect_close(total, want_reduce + want_expand, "total", rtol=0, hint="reduce + expand.")
        expect_close(speedup, want_direct / (want_reduce + want_expand), "speedup", rtol=1e-9, hint="direct / total.")

    return check_conv_cost, check_lecture_1x1


check_conv_cost, check_lecture_1x1 = _conv_checks()


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
def identity_branch(width: int, seed: int, batchnorm: bool = False) -> Any:
    """Linear(width, 2 width) - ReLU - Linear(2 width, width): one such layer pair *can* be the identity
    (W2 [I, -I] relu([I; -I] x) = x), so a stack of them can represent it exactly. With ``batchnorm``, a
    BatchNorm1d after each Linear: in training mode the pair's output is then standardized over the batch, so it
    can come within about 1 % of the identity on the experiment's inputs (mean 0, variance 1), not reach it."""
    import torch

    torch.manual_seed(seed)
    if not batchnorm:
        return torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.ReLU(),
                                   torch.nn.Linear(2 * width, width))
    return torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.BatchNorm1d(2 * width), torch.nn.ReLU(),
                               torch.nn.Linear(2 * width, width), torch.nn.BatchNorm1d(width))


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


# -- zero-gamma: a deep ResNet's first steps ----------------------------------------------------------
def synthetic_images(n: int, seed: int = 0, noise: float = 0.8) -> tuple[Any, Any]:
    """A learnable 10-class task in CIFAR's shape, for experiments that need no data: x (n, 3, 32, 32) float32, one
    coarse random colour pattern per class (4x4 cells of 8x8 pixels, values in -1..1) plus Gaussian noise of
    standard deviation ``noise``; y (n,) int64 labels. The patterns depend on nothing but the fixed seed 0, the
    draw of images and labels on ``seed``."""
    import torch

    patterns = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    patterns = patterns.repeat_interleave(8, 2).repeat_interleave(8, 3) * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return patterns[y] + noise * torch.randn(n, 3, 32, 32, generator=g), y


def first_steps(model: Any, *, steps: int = 48, batch: int = 32, lr: float = 0.1, seed: int = 0) -> list[float]:
    """The loss of each of ``model``'s first ``steps`` SGD steps from its initialisation (momentum 0.9, weight decay
    1e-4, the paper's lr 0.1 from the first step: no warm-up) on :func:`synthetic_images`, a fresh batch each step."""
    import torch
    import torch.nn.functional as F

    x, y = synthetic_images(steps * batch, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    for i in range(steps):
        loss = F.cross_entropy(model(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def plot_first_steps(curves: dict[str, Sequence[float]], title: str = "") -> Any:
    """Loss against step for each run of :func:`first_steps` (log axis), with ln 10 (a uniform guess) marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, losses in curves.items():
        ax.semilogy(np.arange(1, len(losses) + 1), losses, marker=".", label=label)
    ax.axhline(math.log(10), color="0.6", lw=0.8, ls="--", label="ln 10: a uniform guess")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title or "the first steps at lr 0.1, without warm-up")
    ax.legend(fontsize=9)
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


def plot_grad_norms(depths: Sequence[int], curves: dict[str, np.ndarray], *, fit: bool = True,
                    ax: Any = None, title: str = "") -> Any:
    """First-block over last-block gradient norm against depth, one curve per network kind, log scale; with
    ``fit``, each label shows its factor per block, fitted with notebook 02's method (least squares on the
    logarithms, the number of blocks (depth - 2) / 2 as the exponent). The fit is drawn, never returned:
    returning it would hand notebook 02's fit_lambda to anyone who imports the package."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.8))
    blocks = np.asarray([(d - 2) // 2 for d in depths], dtype=float)
    for label, values in curves.items():
        shown = label
        if fit:
            slope = np.polyfit(blocks, np.log(np.asarray(values, dtype=float)), 1)[0]
            shown += f"  ({float(np.exp(slope)):.3f} per block)"
        ax.semilogy(depths, values, marker="o", label=shown)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("||dL/dx_1|| / ||dL/dx_L||")
    ax.set_title(title or "gradient at the first block relative to the last, at initialisation")
    ax.legend(fontsize=9)
    return ax


# -- shattered gradients -----------------------------------------------------------------------------------
def _antipodal_linear(d: int) -> Any:
    """Flatten, then a bias-free Linear(d, 10) whose logits are (s, -s, 0, ..., 0) with s = u . x: for label 2,
    dL/dx = (p_0 - p_1) u, whose sign is the sign of s. So the gradients at x and at c x (c a number) point the
    same way for c > 0 and opposite ways for c < 0: cosine +1 or -1 exactly, with no second implementation."""
    import torch

    g = torch.Generator().manual_seed(7)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    linear = torch.nn.Linear(d, 10, bias=False, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = u
        linear.weight[1] = -u
    return torch.nn.Sequential(torch.nn.Flatten(), linear)


def check_gradient_correlation(measure: Callable[..., Any]) -> None:
    """What ``measure(model, x, x_near, y)`` must give where the answer is known without computing it: 1 when
    x_near is x; on a model whose gradients at x and c x are parallel (c > 0) or opposite (c < 0), the average of
    the per-image signs; a float; x, x_near and the model's mode left as they were."""
    __tracebackhide__ = True
    import torch

    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    y = torch.full((4,), 2)
    model = beside(measure, _antipodal_linear, 12)
    for factors, want, says in (((-1.0, -1.0, -1.0, -1.0), -1.0, "every image's x_near is -x, whose gradient is "
                                                                  "the opposite of x's"),
                                ((2.0, 0.5, 3.0, 1.0), 1.0, "every image's x_near is a positive multiple of x, whose "
                                                            "gradient points the same way"),
                                ((-1.0, -2.0, 2.0, 3.0), 0.0, "two images' gradients are opposite (-1) and two "
                                                              "parallel (+1): their average is 0")):
        x_near = x * torch.tensor(factors, dtype=torch.float64).view(-1, 1, 1, 1)
        keep = (x.clone(), x_near.clone())
        got = call(measure, model, x, x_near, y, name="gradient_correlation")
        expect_true(isinstance(got, float) or (hasattr(got, "ndim") and got.ndim == 0 and not isinstance(got, bool)),
                    f"gradient_correlation should return one number (a float), not {type(got).__name__}.")
        got = float(got)
        if abs(got - want) > 1e-6:
            if abs(got - 1.0) < 1e-6:
                hint = (" It gives 1 where the gradients are opposite: as if it compared x's gradient with itself "
                        "(the second gradient is at x_near), or dropped the cosine's sign.")
            elif abs(got) > 1 + 1e-6:
                hint = " A cosine lies between -1 and 1: divide the dot product by both norms."
            else:
                hint = (" One cosine over the whole batch mixes the images: take the cosine image by image "
                        "(F.cosine_similarity over the flattened pixels of each image), then the mean.")
            raise CheckFailed(f"gradient_correlation is {got:.6g} where it should be {want:g}: {says}.{hint}")
        expect_true(torch.equal(x, keep[0]) and torch.equal(x_near, keep[1])
                    and not x.requires_grad and not x_near.requires_grad,
                    "gradient_correlation changed x or x_near in place (their values, or requires_grad): work on "
                    "copies (x.detach().clone().requires_grad_(True)).")
    from . import models

    net = beside(measure, models.cifar_net, 8, residual=False)
    net.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    same = float(call(measure, net, x, x.clone(), torch.arange(4), name="gradient_correlation"))
    expect_true(abs(same - 1.0) < 1e-5, f"with x_near equal to x the gradients are equal, so the correlation "
                                        f"should be 1; it is {same:.6g}.")
    expect_true(net.training, "gradient_correlation left the network in eval mode: measure it in the mode it is in.")


def check_gradient_correlation_on(measure: Callable[..., Any], reference: Callable[..., float], depth: int,
                                  residual: bool, seed: int) -> None:
    """``measure`` on a seeded CIFAR network (with BN, training mode) and a batch with a nearby batch (x plus 10 %
    noise), against ``reference`` on a float64 copy. Tolerance 1e-4: on these shallow networks the float32 answer
    and the float64 reference differ by < 1e-7 (measured on two CPU capabilities; tests/test_resnet.py asserts
    < 1e-5), while one forward pass of both batches moves the correlation by > 3e-4 (a whole-batch cosine can
    come closer; check_gradient_correlation's closed-form cases catch it)."""
    __tracebackhide__ = True
    import copy

    import torch

    from . import models

    torch.manual_seed(seed)
    mine = models.cifar_net(depth, residual=residual).train()
    state = {k: v.clone() for k, v in mine.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 32, 32, generator=g)
    x_near = x + 0.1 * torch.randn(x.shape, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)

    def ref(**switch: bool) -> float:
        return reference(copy.deepcopy(mine).double(), x.double(), x_near.double(), y, **switch)

    want, variants = ref(), {"one_pass": ref(one_pass=True), "whole_batch": ref(whole_batch=True)}
    what = f"{'residual' if residual else 'plain'}-{depth} (hidden test)"
    model = beside(measure, models.cifar_net, depth, residual=residual)
    call(model.load_state_dict, state, name="load_state_dict")
    call(model.train, name="train")
    got = float(call(measure, model, x.clone(), x_near.clone(), y.clone(), name="gradient_correlation"))
    if abs(got - want) <= 1e-4:
        return
    hint = ""
    if abs(got - variants["one_pass"]) <= 1e-4:
        hint = (" That is what one forward pass of both batches gives: in training mode BN then normalizes them "
                "together. Send x and x_near through the network separately.")
    elif abs(got - variants["whole_batch"]) <= 1e-4:
        hint = " That is one cosine over the whole batch: take one per image, then their mean."
    raise CheckFailed(f"gradient_correlation on {what} is {got:.6g}; expected {want:.6g}.{hint}")


def plot_gradient_correlation(depths: Sequence[int], curves: dict[str, Sequence[float]], title: str = "") -> Any:
    """The correlation of dL/dx between nearby inputs against depth, one curve per kind of network."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, values in curves.items():
        ax.plot(depths, values, marker="o", label=label)
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("cosine of dL/dx at x and at x + noise")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title or "shattered gradients: how alike the gradients at two nearby inputs are, at initialisation")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


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
