"""Notebook 05's checks and figures: the degradation experiment on CIFAR-10.

* **Checks** of the student's training pieces against what each check computes itself (the package has no
  training pieces of its own): :func:`check_channel_stats`, :func:`check_augment`, :func:`check_train_step`,
  :func:`check_evaluate`, :func:`check_lr_at`, :func:`check_grad_norms`, :func:`check_train_loop` (the whole
  loop, on stand-ins for its pieces that write down how they are called), :func:`check_depth_costs`. Networks
  and optimizers that a check hands to the student's function are made beside it
  (:func:`goingdeeper.checks.beside`), so the same checks work in a notebook and in the grading command.
* **Figures**: :func:`show_images`, :func:`plot_figure6` (the paper's Figure 6 from our histories),
  :func:`plot_depth_costs` (a short run's evidence: what depth costs plain and residual networks, as the
  student's ``depth_costs`` reads it), :func:`plot_grad_norms_over_training`, :func:`plot_confusion`.
* **Results**: :func:`shipped_results` reads the histories shipped with the course (real runs, with their
  provenance), if any.

Images are uint8 (N, 3, 32, 32), labels int64 (N,).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .checks import CheckFailed, beside, call, expect_array_close, expect_close, expect_true, read_path

__all__ = [
    "RESULTS_DIR",
    "check_augment",
    "check_channel_stats",
    "check_depth_costs",
    "check_evaluate",
    "check_grad_norms",
    "check_lr_at",
    "check_train_loop",
    "check_train_step",
    "confusion",
    "notebook_data",
    "plot_confusion",
    "plot_depth_costs",
    "plot_figure6",
    "plot_grad_norms_over_training",
    "shipped_results",
    "show_images",
    "synthetic",
]

RESULTS_DIR = Path(__file__).resolve().parent / "data"
STYLE = {"plain20": ("tab:blue", "plain-20"), "plain56": ("tab:red", "plain-56"),
         "resnet20": ("tab:blue", "ResNet-20"), "resnet56": ("tab:red", "ResNet-56"),
         "preresnet20": ("tab:green", "pre-act ResNet-20"), "preresnet56": ("tab:purple", "pre-act ResNet-56"),
         "plain32": ("tab:orange", "plain-32"), "resnet32": ("tab:orange", "ResNet-32"),
         "plain44": ("tab:brown", "plain-44"), "resnet44": ("tab:brown", "ResNet-44"),
         "resnet110": ("tab:gray", "ResNet-110"), "preresnet110": ("tab:olive", "pre-act ResNet-110")}


# -- data for a quick look without CIFAR-10 ------------------------------------------------------------
def synthetic(n_train: int = 512, n_test: int = 256, seed: int = 0) -> Any:
    """A CIFAR-10-shaped stand-in (for runs where the real data is not at hand, such as grading): every class
    is a coloured blob at its own place on a noisy background, so a network can learn it in a few steps."""
    import torch

    from .cifar import CIFAR10

    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[Any, Any]:
        y = torch.arange(n) % 10
        y = y[torch.randperm(n, generator=g)]
        x = torch.randint(0, 90, (n, 3, 32, 32), generator=g).float()
        rows, cols = torch.arange(32).view(1, 32, 1), torch.arange(32).view(1, 1, 32)
        cy, cx = 8 + (y // 5) * 16, 4 + (y % 5) * 6
        blob = ((rows - cy.view(-1, 1, 1)) ** 2 + (cols - cx.view(-1, 1, 1)) ** 2 < 30).float()
        colour = torch.stack([(y * 37) % 255, (y * 91) % 255, (y * 151) % 255], 1).float()
        x = x + blob.unsqueeze(1) * colour.view(-1, 3, 1, 1)
        return x.clamp(0, 255).to(torch.uint8), y.to(torch.int64)

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return CIFAR10(train_x, train_y, test_x, test_y)


def notebook_data(grading: bool = False) -> Any:
    """The data notebook 05 trains on: CIFAR-10 (downloaded on first use, see :func:`goingdeeper.cifar.load`).

    ``grading``: the small synthetic stand-in (no download while a notebook is graded). When CIFAR-10 can be
    neither found nor downloaded, prints what to do and returns the stand-in, so that the exercises still run;
    the experiment's curves then mean nothing until the real data is there.
    """
    from . import cifar

    if grading:
        return synthetic()
    try:
        return cifar.load()
    except cifar.DataError as exc:
        print(f"CIFAR-10 is not available: {exc}\n\nUntil it is, this notebook uses a synthetic stand-in of the same "
              "shape: your exercises run and are checked as usual, but the experiment's curves say nothing about "
              "CIFAR-10. Rerun this cell once the data is in place.")
        return synthetic(n_train=2048, n_test=512)


# -- checks ------------------------------------------------------------------------------------------------
def check_channel_stats(channel_stats: Callable[..., Any], x: Any, what: str = "channel_stats") -> None:
    """``channel_stats(x) -> (mean, std)``: per-channel mean and (population) standard deviation of uint8 images
    (N, C, H, W) over all images and pixels, on the 0..1 scale; the usual mistakes named."""
    __tracebackhide__ = True
    import torch

    v = x.detach().clone().to(torch.float64)  # the expected values first, from a copy
    c = v.shape[1]
    per = v.transpose(0, 1).reshape(c, -1)  # (C, N*H*W)
    mean, std = per.mean(1) / 255, per.std(1, correction=0) / 255
    sample = per.std(1, correction=1) / 255
    pooled = torch.full((c,), float(v.std(correction=0)) / 255, dtype=torch.float64)
    per_image = v.flatten(2).std(2, correction=0).mean(0) / 255
    wrapped = ((x.detach().clone().to(torch.int64) ** 2) % 256).to(torch.float64).transpose(0, 1).reshape(c, -1)
    overflow = ((wrapped.mean(1) - per.mean(1) ** 2).clamp(min=0)).sqrt() / 255
    got = call(channel_stats, x, name=what)
    expect_true(isinstance(got, (tuple, list)) and len(got) == 2,
                f"{what} should return a pair (mean, std), each with one number per channel; got "
                f"{type(got).__name__}.")
    try:
        spread = np.asarray(got[1], dtype=float)
    except (TypeError, ValueError):
        spread = np.zeros(0)  # expect_array_close says what is wrong with it
    expect_true(not np.isnan(spread).any(),
                f"the standard deviation {what} returns is nan: the variance came out negative. In uint8, x * x "
                "wraps around at 256; and E[x^2] - E[x]^2 in float32 cancels badly. Convert to float64 first.")
    scale = "Divide by 255: the statistics are on the 0..1 scale that normalize uses."
    expect_array_close(got[0], mean.numpy(), f"the mean {what} returns", rtol=1e-6, atol=1e-9,
                       hint="Average every channel over all images and all pixels.",
                       mistakes=[(mean.numpy() * 255, scale)])
    expect_array_close(got[1], std.numpy(), f"the standard deviation {what} returns", rtol=1e-6, atol=1e-9,
                       hint="The standard deviation of each channel over all images and pixels together.",
                       mistakes=[(std.numpy() * 255, scale),
                                 (sample.numpy(), "It is the sample standard deviation (divided by n - 1): "
                                                  "normalization uses the population one (divided by n)."),
                                 (pooled.numpy(), "It is one standard deviation for all channels together: "
                                                  "compute it per channel."),
                                 (per_image.numpy(), "It is the mean of every image's own standard deviation: "
                                                     "take the deviation over all images and pixels at once."),
                                 (overflow.numpy(), "The squares overflowed: x * x in uint8 wraps around at 256; "
                                                    "convert to a float type before squaring.")])


def _crops(x: Any, pad: int) -> Any:
    """Every crop of the zero-padded batch, flipped and not: (2 * (2 pad + 1)^2, N, C, H, W)."""
    import torch

    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    crops = [padded[:, :, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    crops = torch.stack(crops)
    return torch.cat([crops, crops.flip(-1)])


def check_augment(augment: Callable[..., Any], x: Any, pad: int, seed: int, what: str = "augment") -> None:
    """``augment(x, generator, pad)``: uint8, same shape and device; every image a crop of its zero-padded self
    (flipped or not); offsets drawn per image; about half flipped; the same generator seed, the same result."""
    __tracebackhide__ = True
    import torch

    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    out = call(augment, x, gen(), pad, name=what)
    expect_true(isinstance(out, torch.Tensor), f"{what} should return a tensor, not {type(out).__name__}.")
    expect_true(tuple(out.shape) == tuple(x.shape), f"{what} returns shape {tuple(out.shape)} for images of shape "
                f"{tuple(x.shape)}: crop back to the original size after padding.")
    expect_true(out.dtype == torch.uint8, f"{what} returns {out.dtype}: keep the images uint8 (normalizing comes later).")
    candidates = _crops(x, pad)  # (K, N, C, H, W)
    match = (candidates == out.unsqueeze(0)).flatten(2).all(2)  # (K, N)
    found = match.any(0)
    if not bool(found.all()):
        bad = int((~found).nonzero()[0])
        raise CheckFailed(f"image {bad} of {what}'s output is not a crop of the input padded with {pad} zeros on "
                          "every side, flipped left-right or not: pad with zeros, then take a window of the "
                          "original size at an offset between 0 and 2 * pad in each direction.")
    k = match.float().argmax(0)  # the first candidate each image matches
    side = 2 * pad + 1
    offsets, flipped = k % (side * side), k >= side * side
    if len(x) >= 16:
        expect_true(len(set(offsets.tolist())) > 1, f"every image of {what}'s batch was cropped at the same offset: "
                    "draw the offsets per image (a tensor of N random offsets), not once for the batch.")
        share = float(flipped.float().mean())
        expect_true(0.2 < share < 0.8, f"{what} flipped {share:.0%} of the images: flip each one with "
                    "probability 1/2.")
    again = call(augment, x, gen(), pad, name=what)
    expect_true(torch.equal(out, again), f"{what} gave two different results for generators with the same seed: "
                "draw every random number from the generator you are given.")
    if len(x) >= 16:
        other = call(augment, x, torch.Generator().manual_seed(seed + 1), pad, name=what)
        expect_true(not torch.equal(out, other), f"{what} gave the same result for generators with different seeds: "
                    "draw every random number from the generator you are given (not from one of your own).")
    _check_offsets_cover_the_range(augment, pad, seed, what)


#: Images in the batch that checks the range of the crop offsets: with 2 pad + 1 = 9 values per axis, an
#: honest draw misses one of them with probability about 2 * 9 * (8/9)^256 ~ 1e-12.
RANGE_PROBE_IMAGES = 256


def _check_offsets_cover_the_range(augment: Callable[..., Any], pad: int, seed: int, what: str) -> None:
    """Every offset 0..2 pad occurs along each axis in a batch of small images with distinct, non-zero pixels
    (each crop and flip gives a different image, so the offsets can be read back)."""
    __tracebackhide__ = True
    import torch

    g = torch.Generator().manual_seed(seed + 2)
    probe = torch.randint(1, 256, (RANGE_PROBE_IMAGES, 1, 2 * pad, 2 * pad), generator=g, dtype=torch.uint8)
    candidates = _crops(probe, pad)
    out = call(augment, probe, torch.Generator().manual_seed(seed + 3), pad, name=what)
    match = (candidates == out.unsqueeze(0)).flatten(2).all(2)
    expect_true(bool(match.any(0).all()), f"{what}'s output on {RANGE_PROBE_IMAGES} images of "
                f"{2 * pad}x{2 * pad} pixels is not a set of crops of the input padded with {pad} zeros, flipped "
                "left-right or not.")
    side = 2 * pad + 1
    k = match.float().argmax(0) % (side * side)
    for axis, values in (("vertical", k // side), ("horizontal", k % side)):
        seen = set(values.tolist())
        never = [v for v in range(side) if v not in seen]
        expect_true(not never, f"{what} never cropped at {axis} offset {', '.join(map(str, never))} in "
                    f"{RANGE_PROBE_IMAGES} images (the offsets seen: {min(seen)}..{max(seen)}): the offsets run from "
                    f"0 to 2 * pad = {2 * pad} inclusive, {side} values (torch.randint's upper bound is exclusive: "
                    "2 * pad + 1).")


def _twins(anchor: Any, depth: int, seed: int) -> tuple[Any, Any]:
    """A package CIFAR network beside the student's code and a local copy with the same weights."""
    import torch

    from . import models

    torch.manual_seed(seed)
    local = models.cifar_net(depth)
    remote = beside(anchor, models.cifar_net, depth)
    remote.load_state_dict(local.state_dict())
    return local, remote


def _batch(seed: int, n: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def check_train_step(train_step: Callable[..., Any], seed: int, *, depth: int = 8, steps: int = 2,
                     batch: int = 8) -> None:
    """Two SGD steps with the student's ``train_step`` against the same steps done here: the returned loss and
    number of misclassified images, the weights after each step, and the gradients left in ``.grad``."""
    __tracebackhide__ = True
    import torch
    import torch.nn.functional as F

    local, remote = _twins(train_step, depth, seed)
    local_opt = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    remote_opt = beside(train_step, torch.optim.SGD, remote.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    local.train(), remote.train()
    for step in range(steps):
        x, y = _batch(seed + step, batch)
        local_opt.zero_grad()
        logits = local(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        want_grad = local.conv1.weight.grad.detach().clone()
        local_opt.step()
        want_loss, want_wrong = float(loss.detach()), int((logits.argmax(1) != y).sum())
        got = call(train_step, remote, remote_opt, x, y, name="train_step")
        expect_true(isinstance(got, (tuple, list)) and len(got) == 2,
                    "train_step should return (loss, number of misclassified images).")
        where = f" at step {step + 1}"
        expect_close(got[0], want_loss, "the loss train_step returns" + where, rtol=1e-4,
                     hint="The mean cross-entropy of the batch (F.cross_entropy), computed before the step.")
        expect_close(got[1], want_wrong, "the number of misclassified images" + where, rtol=0, atol=0,
                     hint="Count the images whose largest logit is not at their label's position.")
        state = {k: v for k, v in remote.state_dict().items()}
        grad = remote.conv1.weight.grad
        expect_true(grad is not None, "after train_step the gradients should still be in .grad: zero them before "
                                      "backward, not after the step.")
        if not torch.allclose(grad.detach(), want_grad, rtol=1e-4, atol=1e-6):
            ratio = float(grad.norm() / want_grad.norm())
            hint = (" They have piled up over two steps: zero the gradients before every backward."
                    if step > 0 and abs(ratio - 1) > 0.05 else "")
            raise CheckFailed(f"the gradients train_step leaves in .grad{where} are wrong.{hint}")
        for name, value in local.state_dict().items():
            if not torch.allclose(state[name].float(), value.float(), rtol=1e-4, atol=1e-6):
                raise CheckFailed(f"after train_step{where}, {name} is not what one SGD step gives: backward, then "
                                  "optimizer.step(), once per batch.")


def check_evaluate(evaluate: Callable[..., Any], seed: int, *, n: int = 50, batch_size: int = 16) -> None:
    """The student's ``evaluate(model, x, y, batch_size)`` on a network with non-trivial BN statistics: the
    error rate in inference mode, batch by batch, leaving the model's mode and statistics as they were."""
    __tracebackhide__ = True
    import torch

    from . import cifar

    local, remote = _twins(evaluate, 8, seed)
    local.train()
    with torch.no_grad():  # move the running statistics away from 0 and 1
        for i in range(3):
            local(_batch(seed + 10 + i, 32)[0] * 2 + 1)
    remote.load_state_dict(local.state_dict())
    state_before = {k: v.clone() for k, v in local.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    local.eval()
    with torch.no_grad():
        predictions = local(cifar.normalize(x)).argmax(1)
        y = torch.where(torch.rand(n, generator=g) < 0.5, predictions, torch.randint(0, 10, (n,), generator=g))
        wrong = predictions != y
        want = int(wrong.sum()) / n
        raw = int((local(x.float()).argmax(1) != y).sum()) / n
        full = n - n % batch_size  # the images in whole batches
        dropped = int(wrong[:full].sum()) / full if 0 < full < n else None
    local.train()
    with torch.no_grad():  # what a forgotten model.eval() gives, batch by batch (this moves local's statistics)
        train_mode = sum(int((local(cifar.normalize(x[i:i + batch_size])).argmax(1) != y[i:i + batch_size]).sum())
                         for i in range(0, n, batch_size)) / n
    remote.train()
    beside(evaluate, _watch_grad_mode, remote)
    got = call(evaluate, remote, x, y, batch_size, name="evaluate")
    hint = ""
    if got is not None and not isinstance(got, str):
        value = float(got)
        if abs(value - train_mode) < 1e-9 and abs(train_mode - want) > 1e-9:
            hint = "It is the error in training mode: call model.eval() first (BN must use its running statistics)."
        elif abs(value - raw) < 1e-9 and abs(raw - want) > 1e-9:
            hint = "It is the error on raw pixels: normalize each batch with cifar.normalize first."
        elif abs(value - (1 - want)) < 1e-9:
            hint = "It is the accuracy: return the error, the fraction misclassified."
        elif dropped is not None and abs(value - dropped) < 1e-9:
            hint = (f"It is the error on the first {full} images only: the last, smaller batch of "
                    f"{n - full} images counts too.")
    expect_close(got, want, f"evaluate's error on {n} images in batches of {batch_size}", rtol=1e-6, atol=1e-9,
                 hint=hint or "Go through x batch_size images at a time (the last batch is smaller), normalize "
                              "each batch, count the misclassified images, divide by len(x).")
    grad_modes = beside(evaluate, _grad_modes_seen, remote)
    expect_true(remote.training, "evaluate should leave the model in the mode it found it in (training mode here): "
                                 "remember model.training and call model.train(...) at the end.")
    still_eval = beside(evaluate, _modules_in_mode, remote, False)
    expect_true(still_eval == 0, f"evaluate set model.training back but left {still_eval} of the model's submodules "
                                 "(its BatchNorm layers among them) in inference mode: model.train(was_training) "
                                 "sets every submodule; assigning model.training sets only the model itself.")
    after = remote.state_dict()
    for name, value in state_before.items():
        if "running" in name and not torch.allclose(after[name].float(), value.float()):
            raise CheckFailed(f"evaluate changed {name}: a forward pass in training mode updates BN's running "
                              "statistics; evaluate in eval mode.")
    expect_true(grad_modes is not None and len(grad_modes) > 0 and not any(grad_modes),
                "evaluate ran the model with gradients enabled: wrap its forward passes in torch.no_grad() (counting "
                "errors needs no graph, and keeping one per batch costs memory).")
    # A model in inference mode stays there.
    remote.eval()
    call(evaluate, remote, x[:batch_size], y[:batch_size], batch_size, name="evaluate")
    in_training = beside(evaluate, _modules_in_mode, remote, True)
    expect_true(in_training == 0, f"evaluate left a model it was given in inference mode with {in_training} "
                                  "module(s) in training mode: restore the mode it found (model.train(was_training)), "
                                  "not always training mode.")
    remote.train()


def _watch_grad_mode(model: Any) -> None:
    """Record ``torch.is_grad_enabled()`` at every forward pass of ``model`` (made beside the student's
    evaluate, so that it records what evaluate did); :func:`_grad_modes_seen` reads the record."""
    import torch

    seen: list[bool] = []
    model._gd_grad_modes = seen
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.is_grad_enabled()))


def _grad_modes_seen(model: Any) -> list[bool] | None:
    seen = getattr(model, "_gd_grad_modes", None)
    return [bool(v) for v in seen] if isinstance(seen, list) else None


def _modules_in_mode(model: Any, training: bool) -> int:
    """How many of ``model``'s modules (itself included) have ``training == training``."""
    return sum(1 for m in model.modules() if m.training == training)


def check_lr_at(lr_at: Callable[..., Any], total: int, base_lr: float, where: str = "") -> None:
    """The paper's step schedule over ``total`` iterations, and base_lr / 10 while warming up."""
    __tracebackhide__ = True
    first, second = round(0.5 * total), round(0.75 * total)
    points = sorted({0, 1, first - 1, first, first + 1, second - 1, second, total - 1})
    for it in points:
        want = base_lr if it < first else base_lr / 10 if it < second else base_lr / 100
        expect_close(call(lr_at, it, total, base_lr, False, name="lr_at"), want,
                     f"lr_at({it}, {total}, {base_lr}){where}", rtol=1e-9,
                     hint=f"base_lr until iteration {first} (half of {total}), then divided by 10, and by 10 again "
                          f"from iteration {second} (three quarters).")
    expect_close(call(lr_at, 5, total, base_lr, True, name="lr_at"), base_lr / 10,
                 f"lr_at(5, {total}, {base_lr}, warmup=True){where}", rtol=1e-9,
                 hint="While warming up (ResNet-110), the rate is base_lr / 10.")


def check_grad_norms(conv_grad_norms: Callable[..., Any], seed: int, *, depth: int = 8) -> None:
    """After a backward pass: ||dL/dW|| for every convolution weight, by name, in the model's order."""
    __tracebackhide__ = True
    import torch
    import torch.nn.functional as F

    local, remote = _twins(conv_grad_norms, depth, seed)
    x, y = _batch(seed, 8)
    local.train(), remote.train()
    F.cross_entropy(local(x), y).backward()
    F.cross_entropy(remote(x), y).backward()
    want = {name: float(p.grad.norm()) for name, p in local.named_parameters() if p.ndim == 4}
    try:
        got = call(conv_grad_norms, remote, name="conv_grad_norms")
    except CheckFailed as exc:
        if "requires_grad=True to a scalar" not in str(exc):
            raise
        raise CheckFailed("conv_grad_norms turns a tensor that requires a gradient into a number: that is a weight "
                          "(or something computed from it), not its gradient. The gradient is in p.grad; take the "
                          "norm of that, not of the weight itself.") from None
    expect_true(isinstance(got, dict), f"conv_grad_norms should return a dict {{name: norm}}, not {type(got).__name__}.")
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    expect_true(not missing, f"conv_grad_norms leaves out {', '.join(missing[:4])}: every convolution's weight, "
                             "by its name in model.named_parameters().")
    expect_true(not extra, f"conv_grad_norms has {', '.join(map(str, extra[:4]))}, which are not convolution weights "
                           "(the 4-dimensional parameters).")
    _expect_model_order(list(got), list(want))
    for name, value in want.items():
        expect_close(got[name], value, f"the gradient norm of {name}", rtol=1e-4,
                     hint="The Euclidean norm of the weight's whole gradient tensor (not of the weight itself).")
    # A network whose layers, in order, are not in alphabetical order (the CIFAR ResNets' names sort the same
    # way they run): a sorted dict passes above but not here.
    local, remote = _order_probe(seed), beside(conv_grad_norms, _order_probe, seed)
    for net in (local, remote):
        net(x).sum().backward()
    want = [name for name, p in local.named_parameters() if p.ndim == 4]
    got = call(conv_grad_norms, remote, name="conv_grad_norms")
    expect_true(isinstance(got, dict), f"conv_grad_norms should return a dict {{name: norm}}, not {type(got).__name__}.")
    _expect_model_order(list(got), want, " on a network whose layers are named stem, body, head")


def _expect_model_order(got: list, want: list, where: str = "") -> None:
    __tracebackhide__ = True
    if got == want:
        return
    hint = " They are sorted by name." if got == sorted(want) and got != want else ""
    raise CheckFailed(f"conv_grad_norms should list the layers in the model's order (as named_parameters() gives "
                      f"them){where}: expected {', '.join(want[:4])}{', ...' if len(want) > 4 else ''}, got "
                      f"{', '.join(map(str, got[:4]))}{', ...' if len(got) > 4 else ''}.{hint}")


def _order_probe(seed: int) -> Any:
    """A small convolutional network whose layers run stem, body, head: named order is not sorted order."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict([
            ("stem", nn.Conv2d(3, 4, 3, padding=1, bias=False)), ("act", nn.ReLU()),
            ("body", nn.Conv2d(4, 4, 3, padding=1, bias=False)), ("head", nn.Conv2d(4, 2, 1)),
        ]))


# -- the student's own training loop -------------------------------------------------------------------------
_MARK = 77  # what the stand-in augment writes at pixel (2, 0, 1): the batch train_step gets went through augment


class _LoopWatch:
    """Stand-ins for augment, train_step, lr_at and evaluate that write down how a training loop calls them.

    Made beside the student's ``train_loop`` (:func:`goingdeeper.checks.beside`): the loop, the stand-ins and
    what they record stay in one process, and the check reads :attr:`log` once the loop has run. Training image
    ``i`` carries its number in pixel (0, 0, 0) (``i % 256``) and (1, 0, 0) (``i // 256``), so every batch can be
    traced back to the images it holds; test images carry 255 at (2, 0, 0). The model starts in inference mode
    and its optimizer has two parameter groups.
    """

    def __init__(self, n_train: int, n_test: int, base_lr: float, seed: int) -> None:
        import torch

        from .cifar import CIFAR10

        g = torch.Generator().manual_seed(seed)
        train_x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
        ids = torch.arange(n_train)
        train_x[:, 0, 0, 0], train_x[:, 1, 0, 0], train_x[:, 2, 0, 0] = ids % 256, ids // 256, 0
        train_x[:, 2, 0, 1] = 0
        test_x = torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
        test_x[:, 2, 0, 0] = 255
        self.data = CIFAR10(train_x, torch.randint(0, 10, (n_train,), generator=g), test_x,
                            torch.randint(0, 10, (n_test,), generator=g))
        self.model = torch.nn.Linear(4, 10)
        self.model.eval()
        self.optimizer = torch.optim.SGD([{"params": [self.model.weight]},
                                          {"params": [self.model.bias], "weight_decay": 0.0}],
                                         lr=base_lr, momentum=0.9, weight_decay=1e-4)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.log: list[dict[str, Any]] = []
        self.steps = 0
        self.epochs_seen = 0

    def run(self, train_loop: Callable[..., Any], epochs: int, batch_size: int, base_lr: float) -> Any:
        """``train_loop`` on this watch's model, optimizer, data, generator and stand-in pieces."""
        return train_loop(self.model, self.optimizer, self.data, epochs, batch_size, base_lr, self.generator,
                          augment=self.augment, train_step=self.train_step, lr_at=self.lr_at,
                          evaluate=self.evaluate)

    def _ids(self, x: Any) -> list[int] | None:
        """The training images a uint8 batch holds (None if it is not made of them)."""
        import torch

        x = x.detach().cpu() if isinstance(x, torch.Tensor) else x
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32):
            return None
        ids = x[:, 0, 0, 0].long() + 256 * x[:, 1, 0, 0].long()
        if bool((x[:, 2, 0, 0] != 0).any()) or bool((ids >= len(self.data.train_y)).any()):
            return None
        return ids.tolist()

    def augment(self, x: Any, generator: Any = None, pad: int = 4) -> Any:
        import torch

        ids = self._ids(x)
        x_cpu = x.detach().cpu() if isinstance(x, torch.Tensor) else x
        self.log.append({"kind": "augment", "ids": ids, "dtype": str(getattr(x, "dtype", type(x).__name__)),
                         "generator": generator is self.generator,
                         "test": isinstance(x, torch.Tensor) and x.ndim == 4
                         and bool((x_cpu[:, 2, 0, 0] == 255).all())})
        if ids is None:
            return x.clone() if isinstance(x, torch.Tensor) else x
        out = x.clone()
        out[:, 2, 0, 1] = _MARK
        return out

    def lr_at(self, iteration: Any, total: Any, base_lr: Any, warmup: Any = False) -> float:
        value = round(float(base_lr) * (0.5 + 0.5 / (1 + float(iteration))), 12)
        self.log.append({"kind": "lr_at", "iteration": iteration if isinstance(iteration, int) else float(iteration),
                         "total": total if isinstance(total, int) else float(total), "base_lr": float(base_lr),
                         "value": value})
        return value

    def _batch_seen(self, x: Any) -> tuple[list[int] | None, str]:
        """(ids, how) of the batch train_step got: how = "ok", "uint8" (not normalized), "not augmented" or
        "not normalized" (float, but not cifar.normalize of augmented training images)."""
        import torch

        from .cifar import normalize

        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            return None, "shape"
        x = x.detach().cpu()  # a loop may move its batches to a device
        if x.dtype == torch.uint8:
            return self._ids(x), "uint8"
        if x.dtype != torch.float32:
            return None, "dtype"
        from .cifar import MEAN, STD

        raw = x.detach()[:, :, 0, :2].float()  # pixels (c, 0, 0) and (c, 0, 1), normalize undone below
        scale = torch.tensor([255 * s for s in STD]).view(1, 3, 1)
        shift = torch.tensor([255 * m for m in MEAN]).view(1, 3, 1)
        u = (raw * scale + shift).round().long()
        ids = (u[:, 0, 0] + 256 * u[:, 1, 0])
        if bool((u[:, 2, 0] != 0).any()) or bool((ids < 0).any()) or bool((ids >= len(self.data.train_y)).any()):
            return None, "not normalized"
        ids_list = ids.tolist()
        raw_batch = self.data.train_x[ids].clone()
        augmented = bool((u[:, 2, 1] == _MARK).all())
        if augmented:
            raw_batch[:, 2, 0, 1] = _MARK
        if not torch.allclose(x.detach(), normalize(raw_batch), atol=1e-4):
            return ids_list, "not normalized"
        return ids_list, "ok" if augmented else "not augmented"

    def train_step(self, model: Any, optimizer: Any, x: Any, y: Any) -> tuple[float, int]:
        import torch

        ids, how = self._batch_seen(x)
        labels = (ids is not None and isinstance(y, torch.Tensor) and tuple(y.shape) == (len(ids),)
                  and bool(torch.equal(y.detach().cpu().long(), self.data.train_y[ids])))
        k = self.steps
        self.steps += 1
        size = len(x) if hasattr(x, "__len__") else 0
        loss, wrong = 2.0 - 0.01 * k, (3 * k + 1) % (size + 1)
        self.log.append({"kind": "step", "ids": ids, "how": how, "labels": labels, "size": size,
                         "training": bool(getattr(model, "training", False)), "model": model is self.model,
                         "optimizer": optimizer is self.optimizer,
                         "lrs": [float(group["lr"]) for group in self.optimizer.param_groups],
                         "loss": loss, "wrong": wrong})
        return loss, wrong

    def evaluate(self, model: Any, x: Any, y: Any, batch_size: int = 1000) -> float:
        import torch

        test = (isinstance(x, torch.Tensor) and x.shape == self.data.test_x.shape
                and bool(torch.equal(x.detach().cpu(), self.data.test_x))
                and isinstance(y, torch.Tensor) and bool(torch.equal(y.detach().cpu(), self.data.test_y)))
        self.epochs_seen += 1
        value = round(0.9 - 0.07 * self.epochs_seen, 12)
        self.log.append({"kind": "evaluate", "test": test, "model": model is self.model, "value": value,
                         "steps_before": self.steps})
        return value


def _run_watched(train_loop: Callable[..., Any], *, n: int, n_test: int, epochs: int, batch_size: int,
                 base_lr: float, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """The student's loop run on the stand-ins: (what it returned, what the stand-ins saw). The stand-ins call
    the loop themselves (:meth:`_LoopWatch.run`), so that the model, the generator and the pieces it gets are
    theirs, in the student's process, never copies."""
    __tracebackhide__ = True
    watch = beside(train_loop, _LoopWatch, n, n_test, base_lr, seed)
    result = call(read_path(watch, "run"), train_loop, epochs, batch_size, base_lr, name="train_loop", copy=False)
    log = read_path(watch, "log")
    return result, [dict(entry) for entry in log]


def check_train_loop(train_loop: Callable[..., Any], seed: int, *, n: int = 10, epochs: int = 2,
                     batch_size: int = 4, base_lr: float = 0.1) -> None:
    """The student's ``train_loop`` run on stand-ins for its four pieces that write down how they are called:
    every epoch a new permutation of all ``n`` images drawn with the generator, batches of ``batch_size`` in
    order (the last one smaller), each augmented (uint8) then normalized, the learning rate of every parameter
    group set from lr_at (iterations counted over the whole run) before each step, the model in training mode,
    evaluate on the test set after each epoch, and the returned records made of what the pieces returned."""
    __tracebackhide__ = True
    import math

    steps = math.ceil(n / batch_size)
    total = epochs * steps
    result, log = _run_watched(train_loop, n=n, n_test=6, epochs=epochs, batch_size=batch_size, base_lr=base_lr,
                               seed=seed)
    what = f"{epochs} epochs of {n} images in batches of {batch_size}"
    done = [e for e in log if e["kind"] == "step"]
    expect_true(len(done) == total,
                f"train_loop called train_step {len(done)} times for {what}: expected {total}, {steps} per epoch "
                f"(the last batch of an epoch holds the {n - (steps - 1) * batch_size} images left over).")
    # augment, before every step, on the uint8 batch, with the generator
    augments = [e for e in log if e["kind"] == "augment"]
    expect_true(all(not a["test"] for a in augments), "train_loop augmented test images: only training batches "
                                                      "are augmented (evaluate sees the test images as they are).")
    expect_true(len(augments) == total, f"augment was called {len(augments)} times for {total} training steps: "
                                        "once per batch.")
    other = [a["dtype"] for a in augments if a["dtype"] != "torch.uint8"]
    expect_true(not other, f"augment got {other[0] if other else ''} images: give it the uint8 batch, and "
                           "normalize what it returns.")
    expect_true(all(a["generator"] for a in augments), "augment did not get the generator train_loop was given: "
                                                       "pass it on (augment(x, generator)), so that a run repeats.")
    # the batches
    sizes = [batch_size] * (steps - 1) + [n - (steps - 1) * batch_size]
    orders = []
    for epoch in range(epochs):
        batches = done[epoch * steps:(epoch + 1) * steps]
        for i, step in enumerate(batches):
            where = f"at step {epoch * steps + i} (epoch {epoch + 1})"
            expect_true(step["how"] != "uint8", f"train_step got uint8 images {where}: normalize the augmented batch "
                                                "(cifar.normalize) before the step.")
            expect_true(step["how"] not in ("shape", "dtype"), f"train_step got no batch of float32 images "
                                                              f"(N, 3, 32, 32) {where}.")
            expect_true(step["how"] != "not normalized",
                        f"the batch train_step got {where} is not cifar.normalize(augment(images)) of training "
                        "images: augment the uint8 batch, then normalize it, and pass that.")
            expect_true(step["how"] != "not augmented",
                        f"the batch train_step got {where} did not go through augment: pass augment's result on.")
            expect_true(step["labels"], f"the labels train_step got {where} are not those of the batch's images: "
                                        "index data.train_y with the same indices as the images.")
            expect_true(step["model"] and step["optimizer"],
                        f"train_step got another model or optimizer {where}: pass the ones train_loop was given.")
            expect_true(step["training"], f"the model was in inference mode {where}: call model.train() at the "
                                          "start of every epoch (evaluate may leave it as it found it, and the "
                                          "model you are given may be in either mode).")
        got_sizes = [s["size"] for s in batches]
        expect_true(got_sizes == sizes, f"the batches of epoch {epoch + 1} hold {got_sizes} images: expected "
                                        f"{sizes} (batches of {batch_size} in order, the last one smaller).")
        order = [i for s in batches for i in s["ids"]]
        expect_true(sorted(order) == list(range(n)),
                    f"in epoch {epoch + 1} some images were trained on twice and others not at all: go through a "
                    f"permutation of all {n} images each epoch.")
        expect_true(order != list(range(n)), f"epoch {epoch + 1} went through the images in their stored order: "
                                              "shuffle them every epoch (torch.randperm with the generator).")
        orders.append(order)
    if epochs > 1:
        expect_true(len({tuple(o) for o in orders}) == epochs,
                    "every epoch went through the images in the same order: draw a new permutation each epoch.")
    # lr_at: once per step, the iteration over the whole run, set in every group before the step
    calls = [e for e in log if e["kind"] == "lr_at"]
    expect_true(len(calls) == total, f"lr_at was called {len(calls)} times for {total} training steps: once per "
                                     "step, for that step's iteration.")
    iterations = [c["iteration"] for c in calls]
    if iterations != list(range(total)):
        restart = epochs > 1 and iterations == list(range(steps)) * epochs
        raise CheckFailed("lr_at was asked for iterations " + _short(iterations) + f": expected 0 to {total - 1}"
                          + (". They start again each epoch: count the iterations over the whole run." if restart
                             else ", one per step, counted over the whole run."))
    bad_total = [c["total"] for c in calls if c["total"] != total]
    expect_true(not bad_total, f"lr_at was told the run has {bad_total[0] if bad_total else ''} iterations: "
                               f"{what} is {total} (epochs times batches per epoch).")
    expect_true(all(abs(c["base_lr"] - base_lr) <= 1e-12 for c in calls),
                f"lr_at was not given base_lr ({base_lr}) as its base_lr.")
    for k, step in enumerate(done):
        want = calls[k]["value"]
        lrs = step["lrs"]
        if all(abs(v - want) <= 1e-12 * max(1.0, want) for v in lrs):
            continue
        if abs(lrs[0] - want) <= 1e-12 * max(1.0, want):
            raise CheckFailed(f"at step {k} only the first parameter group has lr_at's rate ({want:.6g}); the "
                              f"others have {lrs[1:]}: set the rate of every group in optimizer.param_groups.")
        if all(abs(s_["lrs"][0] - base_lr) <= 1e-12 * max(1.0, base_lr) for s_ in done):
            raise CheckFailed(f"the optimizer's learning rate stayed {base_lr:.6g} (the one it was made with) at every "
                              "step: put lr_at's rate into every group of optimizer.param_groups before each step.")
        before = calls[k - 1]["value"] if k else base_lr
        late = all(abs(v - before) <= 1e-12 * max(1.0, before) for v in lrs)
        raise CheckFailed(f"at step {k} the optimizer's learning rate was {lrs[0]:.6g}, but lr_at gave {want:.6g} "
                          f"for iteration {k}" + (": set it before train_step, not after." if late else
                                                  ": put lr_at's rate into every parameter group before the step."))
    # evaluate after each epoch, on the test set
    evals = [e for e in log if e["kind"] == "evaluate"]
    expect_true(len(evals) == epochs, f"evaluate was called {len(evals)} times for {epochs} epochs: once after each.")
    for epoch, e in enumerate(evals):
        expect_true(e["test"], f"evaluate after epoch {epoch + 1} did not get the test set: evaluate(model, "
                               "data.test_x, data.test_y).")
        expect_true(e["model"], "evaluate got another model than the one being trained.")
        expect_true(e["steps_before"] == (epoch + 1) * steps,
                    f"evaluate was called after {e['steps_before']} steps: call it once at the end of each epoch "
                    f"(after {steps}, {2 * steps}, ... steps).")
    # what train_loop returns
    expect_true(isinstance(result, (list, tuple)) and len(result) == epochs,
                f"train_loop should return a list of {epochs} records (one dict per epoch), not "
                f"{type(result).__name__}" + (f" of {len(result)}" if isinstance(result, (list, tuple)) else "") + ".")
    for epoch, record in enumerate(result):
        label = f"the record of epoch {epoch + 1}"
        expect_true(isinstance(record, dict) and {"epoch", "train_loss", "train_error", "test_error", "lr"}
                    <= set(record), f"{label} should be a dict with epoch, train_loss, train_error, test_error "
                                    "and lr.")
        batches = done[epoch * steps:(epoch + 1) * steps]
        expect_close(record["epoch"], epoch + 1, f"{label}: epoch", rtol=0, hint="Epochs are counted from 1.")
        # rtol 1e-6: a mean taken in float32 (torch.tensor(losses).mean()) is right too
        expect_close(record["train_loss"], sum(s["loss"] for s in batches) / steps, f"{label}: train_loss",
                     rtol=1e-6, hint="The mean of the losses train_step returned in this epoch (one per batch).")
        wrong = sum(s["wrong"] for s in batches)
        expect_close(record["train_error"], wrong / n, f"{label}: train_error", rtol=1e-6,
                     hint=f"The images train_step got wrong in this epoch over the {n} images trained on (a "
                          "fraction, 0 to 1; not a mean of the batches' rates, which weighs the last batch wrong).")
        expect_close(record["test_error"], evals[epoch]["value"], f"{label}: test_error", rtol=1e-6,
                     hint="What evaluate returned at the end of this epoch.")
        expect_close(record["lr"], calls[(epoch + 1) * steps - 1]["value"], f"{label}: lr", rtol=1e-6,
                     hint="The learning rate of the epoch's last step.")
    # the generator decides the order: the same seed gives the same run
    again, log_again = _run_watched(train_loop, n=n, n_test=6, epochs=epochs, batch_size=batch_size,
                                    base_lr=base_lr, seed=seed)
    del again
    order_again = [i for e in log_again if e["kind"] == "step" for i in (e["ids"] or [])]
    expect_true(order_again == [i for o in orders for i in o],
                "two runs with generators seeded alike went through the images in different orders: draw the "
                "permutation from the generator train_loop is given (torch.randperm(n, generator=generator)).")
    other, log_other = _run_watched(train_loop, n=n, n_test=6, epochs=epochs, batch_size=batch_size,
                                    base_lr=base_lr, seed=seed + 7919)
    del other
    order_other = [i for e in log_other if e["kind"] == "step" for i in (e["ids"] or [])]
    expect_true(order_other != order_again,
                "runs given generators seeded differently went through the images in the same order: draw the "
                "permutation from the generator train_loop is given, not from one of your own.")


def _short(values: list) -> str:
    return "[" + ", ".join(map(str, values[:12])) + (", ...]" if len(values) > 12 else "]")


# -- reading the runs: what depth costs ------------------------------------------------------------------------
def _history_dict(model: str, train_errors: Sequence[float], test_errors: Sequence[float]) -> dict[str, Any]:
    records = [{"epoch": e + 1, "iteration": 10 * (e + 1), "lr": 0.1, "train_loss": 2.0 - 0.1 * e,
                "train_error": tr, "test_error": te, "test_images": 100, "seconds": 1.0 + e, "train_seconds": 1.0}
               for e, (tr, te) in enumerate(zip(train_errors, test_errors))]
    return {"config": {"model": model}, "records": records, "grad_norms": [], "provenance": {}}


def check_depth_costs(depth_costs: Callable[..., Any], runs: dict[str, tuple[Sequence[float], Sequence[float]]],
                      want: dict[str, float], where: str = "") -> None:
    """The student's ``depth_costs(histories)`` on histories made here: ``runs`` maps a network's name to its
    (training errors, test errors) per epoch (fractions); ``want`` holds the costs worked out by hand, in
    percentage points (the deep network's final training error minus the shallow one's)."""
    __tracebackhide__ = True
    from .train import History

    histories = [beside(depth_costs, History.from_dict, _history_dict(name, *errors)) for name, errors in runs.items()]
    got = call(depth_costs, histories, name="depth_costs", copy=False)
    names = ", ".join(runs)
    expect_true(isinstance(got, dict), f"depth_costs should return a dict ({{'plain': ..., 'residual': ...}}), not "
                                       f"{type(got).__name__}{where}.")
    extra, missing = sorted(map(str, set(got) - set(want))), sorted(set(want) - set(got))
    if missing:
        raise CheckFailed(f"depth_costs of runs of {names} has no {missing[0]!r}{where}.")
    if extra:
        raise CheckFailed(f"depth_costs of runs of {names} has {extra[0]!r}{where}: a kind appears only when both "
                          "its 20- and its 56-layer runs are there (\"plain\" and \"residual\").")
    for kind, value in want.items():
        prefix = "plain" if kind == "plain" else "resnet"
        hint = (f"The final training error of {prefix}56 minus that of {prefix}20, in percentage points: the last "
                f"epoch's train_error of each run, times 100, for the networks named exactly {prefix}20 and "
                f"{prefix}56.")
        expect_close(got[kind], value, f"depth_costs(...)[{kind!r}] for runs of {names}{where}", rtol=1e-9, atol=1e-9,
                     hint=hint)


# -- results ------------------------------------------------------------------------------------------------
def shipped_results(preset: str) -> list[Any]:
    """The histories of preset ``preset`` shipped with the course (real runs, with their provenance), or []."""
    from .train import load_histories

    path = RESULTS_DIR / f"results_{preset}.json"
    return load_histories(path) if path.is_file() else []


# -- figures --------------------------------------------------------------------------------------------------
def show_images(x: Any, y: Any, classes: Sequence[str], *, predictions: Any = None, n: int = 24,
                columns: int = 8, title: str = "") -> Any:
    """A grid of images with their labels (and predictions: green when right, red when wrong)."""
    import matplotlib.pyplot as plt

    n = min(n, len(x))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(x[i].permute(1, 2, 0).cpu().numpy())
        label = classes[int(y[i])]
        if predictions is None:
            ax.set_title(label, fontsize=9)
        else:
            guess = classes[int(predictions[i])]
            ax.set_title(guess, fontsize=9, color="tab:green" if guess == label else "tab:red")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_figure6(histories: Sequence[Any], *, title: str = "") -> Any:
    """The paper's Figure 6 from our runs: plain networks left, residual right; training error thin and dashed,
    test error bold, against epochs."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    kinds = [k for k in ("plain", "residual") if any(("plain" in h.model) == (k == "plain") for h in histories)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, kind in zip(axes, kinds):
        for h in histories:
            if ("plain" in h.model) != (kind == "plain"):
                continue
            colour, label = STYLE.get(h.model, ("black", h.model))
            epochs = [r["epoch"] for r in h.records]
            dot = "o" if len(epochs) <= 3 else None  # a run of one or two epochs is a point, not a curve
            ax.plot(epochs, [100 * r["train_error"] for r in h.records], "--", color=colour, lw=1.2, marker=dot,
                    label=f"{label}, training")
            ax.plot(epochs, [100 * r["test_error"] for r in h.records], "-", color=colour, lw=2.4, marker=dot,
                    label=f"{label}, test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("plain networks" if kind == "plain" else "residual networks")
        ax.legend(fontsize=9)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(title or "CIFAR-10: training (dashed) and test (bold) error")
    fig.tight_layout()
    return fig


def plot_depth_costs(histories: Sequence[Any], costs: dict[str, float] | None = None, *, shallow: int = 20,
                     deep: int = 56, title: str = "") -> Any:
    """The evidence of a short run, as a difference of differences: final training error of the shallow and the
    deep network, plain and residual side by side, with ``costs`` (what your ``depth_costs`` says each pair's
    difference is, in points) written above each pair."""
    import matplotlib.pyplot as plt

    final = {h.model: 100 * h.final["train_error"] for h in histories}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    costs = dict(costs or {})
    for i, (kind, prefix) in enumerate((("plain", "plain"), ("residual", "resnet"))):
        values = [final.get(f"{prefix}{d}") for d in (shallow, deep)]
        if None in values:
            continue
        colours = [STYLE.get(f"{prefix}{d}", ("0.5", ""))[0] for d in (shallow, deep)]
        ax.bar([3 * i, 3 * i + 1], values, color=colours, width=0.9)
        for x, v, d in zip((3 * i, 3 * i + 1), values, (shallow, deep)):
            ax.text(x, v + 0.8, f"{v:.1f}", ha="center", fontsize=9)
            ax.text(x, 1.0, f"{d}", ha="center", color="white", fontsize=10, fontweight="bold")
        if kind in costs:
            ax.annotate(f"depth costs {float(costs[kind]):+.1f} points", (3 * i + 0.5, max(values) + 5),
                        ha="center", fontsize=10)
    ax.set_xticks([0.5, 3.5], ["plain", "residual"])
    ax.set_ylabel("final training error (%)")
    ax.set_ylim(0, max(final.values(), default=1) + 12)
    ax.set_title(title or f"what going from {shallow} to {deep} layers costs")
    fig.tight_layout()
    return fig


def plot_grad_norms_over_training(histories: Sequence[Any], models: Sequence[str] = ("plain56", "resnet56")) -> Any:
    """||dL/dW|| of every convolution layer (first to last) at the recorded iterations, one panel per model."""
    import matplotlib.pyplot as plt

    chosen = [h for h in histories if h.model in models and h.grad_norms]
    if not chosen:
        return None
    fig, axes = plt.subplots(1, len(chosen), figsize=(6.5 * len(chosen), 4.2), sharey=True)
    for ax, h in zip(np.atleast_1d(axes), chosen):
        cmap = plt.get_cmap("viridis")
        for i, record in enumerate(h.grad_norms):
            norms = list(record["norms"].values())
            ax.semilogy(np.arange(1, len(norms) + 1), norms, color=cmap(i / max(len(h.grad_norms) - 1, 1)),
                        label=f"iteration {record['iteration']}")
        ax.set_xlabel("convolution layer (1 = next to the input)")
        ax.set_title(STYLE.get(h.model, (None, h.model))[1])
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("||dL/dW||")
    fig.suptitle("gradient norm of every layer during training")
    fig.tight_layout()
    return fig


def confusion(predicted: Any, labels: Any) -> np.ndarray:
    """The 10 x 10 confusion matrix (rows: true class, columns: predicted) of class indices ``predicted`` (N,)
    against ``labels`` (N,): tensors on any device, or arrays."""
    p = np.asarray(predicted.cpu() if hasattr(predicted, "cpu") else predicted).astype(int).ravel()
    t = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(int).ravel()
    if p.shape != t.shape:
        raise ValueError(f"confusion: {p.size} predictions for {t.size} labels")
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (t, p), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5.8))
    shares = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(10):
        for j in range(10):
            ax.text(j, i, f"{shares[i, j]:.0%}" if matrix[i, j] else "", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(10), classes, rotation=45, ha="right")
    ax.set_yticks(range(10), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class")
    ax.grid(False)
    ax.set_title(title or "confusion matrix (share of each true class)")
    fig.tight_layout()
    return fig


def save_results(histories: Sequence[Any], preset: str) -> Path:
    """Write histories as the course's shipped results for ``preset`` (what :func:`shipped_results` reads)."""
    from .train import save_histories

    path = RESULTS_DIR / f"results_{preset}.json"
    save_histories(list(histories), path)
    return path


__all__ += ["save_results"]
