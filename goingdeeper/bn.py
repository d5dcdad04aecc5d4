"""Notebook 03's machinery: checks of batch normalization against torch, and the experiments behind the lecture's figures.

Conventions (the lecture's): a batch ``x`` of shape (m, D), statistics per
feature over the batch axis, the *biased* batch variance
``sigma_B^2 = 1/m * sum (x_i - mu_B)^2`` in training, ``eps`` inside the square
root. PyTorch normalizes with the same biased variance, but updates its
running variance with the *unbiased* one (``m / (m - 1)`` times larger); :func:`check_running` compares with
it. The torch oracles are locals of the checks: no check's oracle is importable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "Run",
    "YourBatchNorm",
    "check_forward",
    "check_network",
    "check_running",
    "check_spatial",
    "check_step",
    "make_mlp",
    "step_data",
    "step_mistakes",
    "activation_percentiles_figure",
    "drift",
    "yours_or_torch",
    "gradient_norms_at_init",
    "plot_training_curves",
    "train",
    "training_explorer",
]


# -- your batch norm as a torch layer ------------------------------------------------------------


@dataclass
class YourBatchNorm:
    """The student's numpy batch norm, packaged as a factory of torch layers: ``YourBatchNorm(...)(width)``.

    The six functions are notebook 03's answers. In training mode a layer calls
    ``forward_train`` and ``update_running_stats``; in inference mode ``forward_eval``; its
    backward pass calls ``backward_dxhat``, ``backward_compact`` and ``backward_dparams``. Everything
    is computed in float64 numpy and handed back to torch in the input's dtype, so torch's autograd
    runs the rest of the network around the student's code.
    """

    forward_train: Callable
    update_running_stats: Callable
    forward_eval: Callable
    backward_dxhat: Callable
    backward_compact: Callable
    backward_dparams: Callable
    label: str = "your BN"

    def __call__(self, width: int, eps: float = 1e-5, momentum: float = 0.1) -> Any:
        return _your_bn_layer(self, width, eps, momentum)


def _pair(result: Any, n: int, name: str) -> tuple:
    from .checks import CheckFailed

    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise CheckFailed(f"{name} should return {n} values in a tuple, but returned {type(result).__name__}.")
    return tuple(result)


def _your_bn_layer(fns: YourBatchNorm, width: int, eps: float, momentum: float) -> Any:
    import torch

    from .checks import as_array, call

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, stats):  # type: ignore[override]
            xn, gn, bn_ = (t.detach().cpu().double().numpy() for t in (x, gamma, beta))
            y, mu, var, x_hat = _pair(call(fns.forward_train, xn, gn, bn_, eps, name="batchnorm_forward_train"), 4,
                                      "batchnorm_forward_train")
            stats.update(mu=as_array(mu, "mu"), var=as_array(var, "var"), m=xn.shape[0])
            ctx.saved = (gn, as_array(x_hat, "x_hat"), as_array(var, "var"))
            return torch.as_tensor(as_array(y, "y"), dtype=x.dtype)

        @staticmethod
        def backward(ctx, dy):  # type: ignore[override]
            gn, x_hat, var = ctx.saved
            dyn = dy.detach().cpu().double().numpy()
            dxhat = as_array(call(fns.backward_dxhat, dyn, gn, name="bn_backward_dxhat"), "dL/dx_hat")
            dx = as_array(call(fns.backward_compact, dxhat, x_hat, var, eps, name="bn_backward_compact"), "dL/dx")
            dgamma, dbeta = _pair(call(fns.backward_dparams, dyn, x_hat, name="bn_backward_dparams"), 2,
                                  "bn_backward_dparams")
            as_t = lambda a: torch.as_tensor(as_array(a, "a gradient"), dtype=dy.dtype)  # noqa: E731
            return as_t(dx), as_t(dgamma), as_t(dbeta), None

    class YourBatchNorm1d(torch.nn.Module):
        """A BatchNorm1d whose every computation is the student's."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(width))
            self.bias = torch.nn.Parameter(torch.zeros(width))
            self.register_buffer("running_mean", torch.zeros(width, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(width, dtype=torch.float64))
            self.momentum = momentum

        def forward(self, x):  # type: ignore[override]
            if not self.training:
                y = call(fns.forward_eval, x.detach().cpu().double().numpy(), self.weight.detach().double().numpy(),
                         self.bias.detach().double().numpy(), self.running_mean.numpy(), self.running_var.numpy(), eps,
                         name="batchnorm_forward_eval")
                return torch.as_tensor(as_array(y, "y"), dtype=x.dtype)
            stats: dict[str, Any] = {}
            y = _Function.apply(x, self.weight, self.bias, stats)
            if self.momentum:
                rm, rv = _pair(call(fns.update_running_stats, self.running_mean.numpy(), self.running_var.numpy(),
                                    stats["mu"], stats["var"], stats["m"], self.momentum, name="update_running_stats"),
                               2, "update_running_stats")
                self.running_mean.copy_(torch.as_tensor(as_array(rm, "running_mean")))
                self.running_var.copy_(torch.as_tensor(as_array(rv, "running_var")))
            return y

        def extra_repr(self) -> str:
            return f"{width}, eps={eps}, momentum={momentum} (your numpy code)"

    return YourBatchNorm1d()


def yours_or_torch(layer: YourBatchNorm) -> Any:
    """``layer`` when the student's batch norm works inside a small network, else True (torch's
    BatchNorm1d), with a line saying which the experiments use."""
    from .checks import CheckFailed

    try:
        check_network(layer, depth=2, width=4, batch=8, steps=1)
    except CheckFailed as exc:
        print("The experiments below use torch.nn.BatchNorm1d: your batch norm does not work inside a network yet "
              f"({str(exc)[:160]}...). Finish sections 2 to 5, then run them again with yours.")
        return True
    print("The experiments below use your batch norm.")
    return layer


def check_network(layer: YourBatchNorm, *, depth: int = 4, width: int = 16, batch: int = 32, activation: str = "sigmoid",
                  steps: int = 3, seed: int = 0, where: str = "") -> None:
    """Your BN against ``torch.nn.BatchNorm1d`` inside the same network (float64, the same weights): the
    outputs, every parameter's gradient, and after ``steps`` SGD steps the running statistics and the
    outputs in inference mode."""
    __tracebackhide__ = True
    import torch

    from .checks import CheckFailed, expect_array_close

    x_all, y_all = _digits()
    x_all, y_all = x_all.double(), y_all
    nets = [make_mlp(depth, width, batchnorm=flag, activation=activation, seed=seed).double()
            for flag in (True, layer)]
    gen = torch.Generator().manual_seed(seed + 7)
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        outs, grads = [], []
        for net in nets:
            net.train()
            net.zero_grad()
            out = net(x_all[idx])
            torch.nn.functional.cross_entropy(out, y_all[idx]).backward()
            outs.append(out.detach().numpy())
            grads.append([p.grad.detach().numpy().copy() if p.grad is not None else None for p in net.parameters()])
        at = f" at training step {step + 1}{where}"
        expect_array_close(outs[1], outs[0], "the network's output with your BN (training mode)" + at, rtol=1e-7,
                           atol=1e-9, hint="Your forward pass inside the network differs from BatchNorm1d's.")
        names = [n for n, _ in nets[0].named_parameters()]
        for name, want, got in zip(names, grads[0], grads[1]):
            if got is None:
                raise CheckFailed(f"parameter {name} received no gradient with your BN{at}: does bn_backward_compact "
                                  "return dL/dx for the layer below?")
            expect_array_close(got, want, f"the gradient of {_describe(name, nets[0])} with your BN" + at,
                               rtol=1e-6, atol=1e-9,
                               hint="Your backward pass (bn_backward_dxhat, bn_backward_compact, bn_backward_dparams) "
                                    "inside the network differs from BatchNorm1d's.")
        with torch.no_grad():
            for net, gs in zip(nets, grads):
                for p, g in zip(net.parameters(), gs):
                    p -= 0.5 * torch.as_tensor(g)
    norms = [[m for m in net if hasattr(m, "running_var")] for net in nets]
    for k, (want, got) in enumerate(zip(*norms)):
        expect_array_close(got.running_mean.numpy(), want.running_mean.numpy(),
                           f"the running mean of BN layer {k + 1} after {steps} steps{where}")
        expect_array_close(got.running_var.numpy(), want.running_var.numpy(),
                           f"the running variance of BN layer {k + 1} after {steps} steps{where}")
    probe = x_all[:5]
    outs = []
    for net in nets:
        net.eval()
        with torch.no_grad():
            outs.append(net(probe).numpy())
    expect_array_close(outs[1], outs[0], f"the network's output in inference mode after {steps} steps{where}",
                       hint="batchnorm_forward_eval inside the network differs from BatchNorm1d in eval mode.")


def _describe(name: str, net: Any) -> str:
    """'3.weight' -> "layer 2's BN gamma" style names for messages."""
    import torch

    index, kind = name.split(".")
    module = net[int(index)]
    linears = [i for i, m in enumerate(net) if isinstance(m, torch.nn.Linear)]
    if isinstance(module, torch.nn.Linear):
        k = linears.index(int(index)) + 1
        return f"linear layer {k}'s {'weights' if kind == 'weight' else 'bias'}"
    k = sum(1 for i in linears if i < int(index))
    return f"BN layer {k}'s {'gamma' if kind == 'weight' else 'beta'}"


# -- experiments ---------------------------------------------------------------------------------
@dataclass
class Run:
    """What one training run recorded.

    ``percentiles[layer]`` has shape (records, width, 3): for every unit of the watched layer, the
    15th, 50th and 85th percentiles of its input to the nonlinearity over a fixed batch;
    ``pre_percentiles[layer]`` the same for the layer's linear output (what BN receives, in a
    network with BN).
    """

    label: str
    losses: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    percentiles: dict[int, list[list[float]]] = field(default_factory=dict)
    pre_percentiles: dict[int, list[list[float]]] = field(default_factory=dict)
    diverged: bool = False


DIVERGED = 10.0  # a mean cross-entropy above this (chance is ln 10 = 2.3) counts as diverged


def _digits() -> tuple[Any, Any]:
    """Notebook 02's handwritten digits (the training split), each pixel standardised: (1347, 64) float32, labels."""
    import torch

    from .fc import load_digits

    x, y, _, _ = load_digits(seed=0)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _bn_label(batchnorm: Any) -> str:
    if batchnorm is True:
        return "BN"
    if not batchnorm:
        return "no BN"
    return getattr(batchnorm, "label", "your BN")


def make_mlp(depth: int, width: int, *, batchnorm: Any, activation: str = "sigmoid", init_scale: float = 1.0,
             seed: int = 0, inputs: int = 64):
    """``depth`` hidden layers of ``width``: Linear -> (batch norm) -> activation; then a Linear to 10 classes.

    ``batchnorm``: False (none), True (``torch.nn.BatchNorm1d``) or a factory ``width -> layer`` such as
    :class:`YourBatchNorm`. Weights are N(0, (init_scale / sqrt(fan_in))^2), biases 0.
    """
    import torch

    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    norm = torch.nn.BatchNorm1d if batchnorm is True else batchnorm
    layers: list[Any] = []
    d = inputs
    for _ in range(depth):
        linear = torch.nn.Linear(d, width)
        with torch.no_grad():
            linear.weight.normal_(0, init_scale / d**0.5)
            linear.bias.zero_()
        layers += [linear] + ([norm(width)] if norm else []) + [act()]
        d = width
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


def train(*, batchnorm: Any, lr: float, steps: int, depth: int = 6, width: int = 64, activation: str = "sigmoid",
          init_scale: float = 1.0, batch: int = 64, record_every: int = 10, seed: int = 0,
          watch: tuple[int, ...] = ()) -> Run:
    """Plain SGD on notebook 02's digits; records the loss on the training images every ``record_every`` steps
    and, for hidden layers in ``watch`` (1-based), the 15th/50th/85th percentiles of their linear output and of
    their input to the nonlinearity, on a fixed batch of 512 images.

    ``batchnorm`` as in :func:`make_mlp`. A run whose loss exceeds :data:`DIVERGED` or stops being finite is
    marked diverged and stopped.
    """
    import torch

    inputs, labels = _digits()
    probe = inputs[:512]
    model = make_mlp(depth, width, batchnorm=batchnorm, activation=activation, init_scale=init_scale, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    run = Run(f"{_bn_label(batchnorm)}, lr {lr:g}, init x{init_scale:g}")
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    nonlinear = [m for m in model if isinstance(m, (torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.ReLU))]
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps + 1):
        if step % record_every == 0:
            model.eval()  # the loss as the model would predict (BN: running statistics)
            with torch.no_grad():
                full_loss = torch.nn.functional.cross_entropy(model(inputs), labels).item()
            model.train()
            if watch:
                # What the watched layers see while training (BN: batch statistics), without moving
                # the running statistics (momentum 0 for this one forward pass).
                norms = [m for m in model if hasattr(m, "running_var")]
                momenta = [m.momentum for m in norms]
                for m in norms:
                    m.momentum = 0.0
                captured: dict[tuple[str, int], Any] = {}
                hooks = [nonlinear[k - 1].register_forward_hook(
                    lambda mod, inp, out, k=k: captured.__setitem__(("act", k), inp[0].detach())) for k in watch]
                hooks += [linears[k - 1].register_forward_hook(
                    lambda mod, inp, out, k=k: captured.__setitem__(("pre", k), out.detach())) for k in watch]
                with torch.no_grad():
                    model(probe)
                for h in hooks:
                    h.remove()
                for m, momentum in zip(norms, momenta):
                    m.momentum = momentum
                q = torch.tensor([0.15, 0.5, 0.85])
                for (kind, k), acts in captured.items():
                    target = run.percentiles if kind == "act" else run.pre_percentiles
                    # per unit: (width, 3), over the probe batch
                    target.setdefault(k, []).append(torch.quantile(acts.float(), q, dim=0).T.tolist())
            run.steps.append(step)
            run.losses.append(full_loss if np.isfinite(full_loss) else float("nan"))
            if not np.isfinite(full_loss) or full_loss > DIVERGED:
                run.diverged = True
                break
        if step == steps:
            break
        idx = torch.randint(0, len(inputs), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run


def gradient_norms_at_init(*, batchnorm: Any, depth: int = 20, width: int = 64, activation: str = "sigmoid",
                           init_scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """||dL/dW|| for each hidden layer's weights (layer 1 first) at initialisation, on 256 digits."""
    import torch

    inputs, labels = _digits()
    model = make_mlp(depth, width, batchnorm=batchnorm, activation=activation, init_scale=init_scale, seed=seed)
    model.train()
    torch.nn.functional.cross_entropy(model(inputs[:256]), labels[:256]).backward()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)][:-1]
    return np.array([m.weight.grad.norm().item() for m in linears])


def drift(percentiles: Any) -> np.ndarray:
    """How far each unit's distribution has moved since the first record, in units of its first spread:
    |median(t) - median(0)| / (85th - 15th percentile at step 0), averaged over the units: (records,)."""
    p = np.asarray(percentiles, dtype=float)
    spread = np.maximum(p[0, :, 2] - p[0, :, 0], 1e-12)
    return (np.abs(p[:, :, 1] - p[0, :, 1]) / spread).mean(axis=1)


def activation_percentiles_figure(runs: list[Run], layer: int):
    """The internal-covariate-shift figure, told honestly.

    For one typical unit of ``layer`` (the unit whose distribution moves the median amount in the
    first run), the 15th/50th/85th percentiles over training of its linear output in every run (what BN
    receives, in a run with BN) and, for a run with BN, also of BN's output; the last panel gives the
    drift of every signal averaged over all the layer's units (see :func:`drift`).
    """
    import matplotlib.pyplot as plt

    first = np.asarray(runs[0].pre_percentiles[layer], dtype=float)
    moved = np.abs(first[-1, :, 1] - first[0, :, 1]) / np.maximum(first[0, :, 2] - first[0, :, 0], 1e-12)
    unit = int(np.argsort(moved)[len(moved) // 2])
    panels: list[tuple[Run, Any, str]] = []
    for run in runs:
        with_bn = not run.label.startswith("no BN")
        panels.append((run, run.pre_percentiles[layer],
                       f"{run.label}\nunit {unit}'s linear output" + (" = BN's input" if with_bn else
                                                                      " = the sigmoid's input")))
        if with_bn:
            panels.append((run, run.percentiles[layer], f"{run.label}\nunit {unit} after BN = the sigmoid's input"))
    # At most three panels a row: a row of four or more is drawn so wide that a notebook shrinks its text
    # (and its legend) to a few pixels.
    ncols = min(3, len(panels) + 1)
    nrows = -(-(len(panels) + 1) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows), squeeze=False)
    axes = list(grid.flat)
    for spare in axes[len(panels) + 1:]:
        spare.set_visible(False)
    axes = axes[:len(panels) + 1]
    low = min(float(np.min(np.asarray(p)[:, unit, 0])) for _, p, _ in panels)
    high = max(float(np.max(np.asarray(p)[:, unit, 2])) for _, p, _ in panels)
    for ax, (run, p, title) in zip(axes, panels):
        p = np.asarray(p)[:, unit, :]
        steps = run.steps[: len(p)]
        for i, style in enumerate(["--", "-", "--"]):
            ax.plot(steps, p[:, i], style, color="C0")
        ax.fill_between(steps, p[:, 0], p[:, 2], alpha=0.15)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
    axes[0].set_ylabel("15th, 50th, 85th percentile")
    ax = axes[-1]
    for run in runs:
        with_bn = not run.label.startswith("no BN")
        ax.plot(run.steps[: len(run.pre_percentiles[layer])], drift(run.pre_percentiles[layer]),
                label=f"{run.label.split(',')[0]}: linear output")
        if with_bn:
            ax.plot(run.steps[: len(run.percentiles[layer])], drift(run.percentiles[layer]), "--",
                    label=f"{run.label.split(',')[0]}: after BN")
    ax.set_title(f"all {first.shape[1]} units of layer {layer}: how far the median moved\n"
                 "(in units of the initial 15-85 spread)", fontsize=9)
    ax.set_xlabel("training step")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(runs: list[Run], *, ax=None, title: str = ""):
    """Loss against step for each run; the dotted line is chance (ln 10); a diverged run ends with an x
    at the top of the panel."""
    import matplotlib.pyplot as plt

    top = 4.0
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(np.log(10), color="grey", ls=":", lw=1)
    for run in runs:
        label = run.label + (" (diverged)" if run.diverged else "")
        line, = ax.plot(run.steps, np.minimum(run.losses, top), label=label)
        if run.diverged:
            ax.plot(run.steps[-1:], [top], "x", color=line.get_color(), markersize=10, clip_on=False)
    ax.set_ylim(0, top)
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.legend(fontsize=9)
    return ax


def training_explorer(steps: int = 200, batchnorm: Any = True) -> Any:
    """An ipywidgets panel: learning rate, init scale, depth and activation; trains with and without
    ``batchnorm`` (True: torch's; or a :class:`YourBatchNorm`) and redraws both loss curves when a
    control is released. With ``GOINGDEEPER_STATIC=1`` it returns a static figure of a few settings instead."""
    from . import static_mode

    if static_mode():
        return _static_training(steps, batchnorm)
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    lr = widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=1, step=0.25, description="lr",
                                continuous_update=False)
    scale = widgets.FloatLogSlider(value=1.0, base=2, min=-2, max=2, step=0.5, description="init x",
                                   continuous_update=False)
    depth = widgets.IntSlider(value=6, min=1, max=20, description="depth", continuous_update=False)
    activation = widgets.Dropdown(options=["sigmoid", "tanh", "relu"], value="sigmoid", description="activation")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        runs = [train(batchnorm=flag, lr=lr.value, steps=steps, depth=depth.value, activation=activation.value,
                      init_scale=scale.value) for flag in (False, batchnorm)]
        with out:
            out.clear_output(wait=True)
            plot_training_curves(runs, title=f"depth {depth.value}, {activation.value}")
            plt.show()

    for control in (lr, scale, depth, activation):
        control.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox([lr, scale]), widgets.HBox([depth, activation]), out])
    panel.redraw = redraw
    return panel


def check_step(fn: Callable, args: tuple, want: np.ndarray, name: str, hint: str, *, batch_size: int | None = None,
               mistakes: Sequence[tuple[Any, str]] = ()):
    """Call one backward step of the student's and compare it with torch's gradient of the same intermediate;
    ``mistakes`` (see :func:`step_mistakes`) name the usual wrong answers."""
    __tracebackhide__ = True
    from .checks import call, expect_array_close

    expect_array_close(call(fn, *args, name=getattr(fn, "__name__", name)), want, name, hint=hint,
                       rtol=1e-6, atol=1e-9, batch_size=batch_size, mistakes=mistakes)


def step_data(seed: int = 3, m: int = 6, d: int = 4, offset: float = 12.0, eps: float = 1e-5,
              scale: float = 5.0, mu_shift: float = 0.0) -> dict[str, Any]:
    """A batch for the backward-step tests, drawn from ``seed``: x (m, d) = ``scale`` * z + ``offset``, gamma, dy,
    eps, and torch's forward values and gradients at every intermediate of BN on it; with ``mu_shift``, the mean is
    held at the batch mean plus that shift.

    Each test cell computes it itself, so no value the tests compare with comes from the student's namespace. The
    torch oracle is a local of this function: it answers only for the batches drawn here, never for a student's own
    input.
    """

    def intermediate_grads(x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, eps: float,
                           mu: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Forward values and torch autograd's gradient of L = sum(y * dy) at every intermediate of BN.

        Returns a dict with mu, var, x_hat (forward) and dx_hat, dvar, dmu, dx, dgamma, dbeta (backward),
        each the *total* derivative of L, as the lecture's steps compute them. With ``mu`` given, the mean
        is that fixed value (a leaf of the graph, not the batch mean), so dmu is the derivative at a mean
        where the path through sigma^2 does not vanish (and dx then has no path through the mean).
        """
        import torch

        tx = torch.tensor(x, requires_grad=True)
        tg = torch.tensor(gamma, requires_grad=True)
        tb = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        tmu = tx.mean(dim=0) if mu is None else torch.tensor(np.asarray(mu, dtype=float), requires_grad=True)
        var = ((tx - tmu) ** 2).mean(dim=0)
        x_hat = (tx - tmu) / torch.sqrt(var + eps)
        for t in (tmu, var, x_hat):
            if t.grad_fn is not None:
                t.retain_grad()
        y = tg * x_hat + tb
        (y * torch.tensor(dy)).sum().backward()
        return {
            "mu": tmu.detach().numpy(), "var": var.detach().numpy(), "x_hat": x_hat.detach().numpy(),
            "dx_hat": x_hat.grad.numpy(), "dvar": var.grad.numpy(), "dmu": tmu.grad.numpy(), "dx": tx.grad.numpy(),
            "dgamma": tg.grad.numpy(), "dbeta": tb.grad.numpy(),
        }

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d)) * scale + offset
    gamma, dy = rng.normal(size=d), rng.normal(size=(m, d))
    mu = x.mean(axis=0) + mu_shift if mu_shift else None
    return {"x": x, "gamma": gamma, "dy": dy, "eps": eps, **intermediate_grads(x, gamma, dy, eps, mu=mu)}


def step_mistakes(step: str, S: dict[str, Any], mu: np.ndarray | None = None) -> list[tuple[np.ndarray, str]]:
    """What the usual mistakes in one backward step give on the batch ``S`` (from :func:`step_data`), each with
    the sentence that names it. ``step``: 'dxhat', 'dvar', 'dmu', 'dx' or 'compact'; ``mu`` overrides the mean (for dmu)."""
    x, var, eps, dxhat, x_hat = S["x"], S["var"], S["eps"], S["dx_hat"], S["x_hat"]
    mu = S["mu"] if mu is None else mu
    m = x.shape[0]
    a = var + eps
    if step == "dxhat":
        dy, gamma = S["dy"], S["gamma"]
        return [
            (dy, "gamma is missing: y_i changes by gamma times the change of x_hat_i."),
            (dy * gamma + dy.sum(axis=0), "x_hat_i reaches L only through y_i: no sum over the batch here."),
            (dy.sum(axis=0, keepdims=True) * gamma + 0 * dy, "x_hat_i reaches L only through its own y_i: no sum "
                                                              "over the batch here."),
        ]
    if step == "dvar":
        s = np.sum(dxhat * (x - mu), axis=0)
        return [
            (s * -0.5 * a ** -0.5, "The power is off: differentiating (var + eps)^(-1/2) lowers the exponent by one."),
            (s * a ** -1.5, "The factor that the power rule brings down, -1/2, is missing."),
            (s * -0.5 * var ** -1.5, "eps is missing: x_hat divides by sqrt(var + eps), so its derivative has var + eps."),
            (np.sum(dxhat * x, axis=0) * -0.5 * a ** -1.5,
             "x_hat_i depends on the variance through (x_i - mu), not through x_i alone."),
        ]
    if step == "dmu":
        direct = np.sum(dxhat, axis=0) * -1 / np.sqrt(a)
        through_var = S["dvar"] * -2 / m * np.sum(x - mu, axis=0)
        return [
            (direct, "The path through sigma^2 is missing: sigma^2 is computed from x_i - mu_B, so it depends on mu_B "
                     "too. (This test evaluates your function at a mu that is not the batch mean, where that path "
                     "does not vanish.)"),
            (through_var, "The direct path through every x_hat_i is missing."),
            (direct + through_var / 2, "In the path through sigma^2 a factor 2 is missing: the derivative of a square."),
            (direct + through_var * m, "In the path through sigma^2 the factor 1/m of the mean over the batch is missing."),
        ]
    if step == "dx":
        dvar, dmu = S["dvar"], S["dmu"]
        p1, p2, p3 = dxhat / np.sqrt(a), dvar * 2 * (x - mu) / m, dmu / m
        return [
            (p1 + p2, "The path through mu_B is missing (x_i is one of the values mu_B averages)."),
            (p1 + p3, "The path through sigma^2 is missing (x_i is one of the values sigma^2 is computed from)."),
            (p2 + p3, "The direct path through x_hat_i is missing."),
            (p1 + p2 / 2 + p3, "In the path through sigma^2 a factor 2 is missing: the derivative of (x_i - mu)^2."),
            (p1 + p2 * m + p3, "In the path through sigma^2 the factor 1/m is missing: sigma^2 averages over the batch."),
            (p1 + p2 + dmu, "In the path through mu_B the factor 1/m is missing: mu_B = (1/m) sum_j x_j."),
            (p1, "Only the direct path through x_hat_i is there: x_i also reaches the loss through mu_B and sigma^2."),
        ]
    if step == "compact":
        sq = np.sqrt(a)
        s1, s2 = dxhat.sum(axis=0), (dxhat * x_hat).sum(axis=0)
        return [
            ((m * dxhat - s1) / (m * sq), "The term that comes from the variance path (with x_hat_i and a sum over "
                                          "dL/dx_hat_j x_hat_j) is missing."),
            ((m * dxhat - x_hat * s2) / (m * sq), "The term that comes from the mean path (a sum of dL/dx_hat_j over "
                                                  "the batch) is missing."),
            ((m * dxhat - s1 - x_hat * s2) / sq, "The whole expression is m times too large: a factor 1/m is missing."),
            ((dxhat - s1 - x_hat * s2) / (m * sq), "The direct-path term has the wrong factor: compare it with "
                                                  "the other two terms of your derivation."),
            ((m * dxhat - s1 - x_hat * s2) / (m * np.sqrt(var)), "eps is missing from sqrt(var + eps)."),
        ]
    raise ValueError(f"no mistakes known for step {step!r}")


def forward_mistakes(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> list[tuple[np.ndarray, str]]:
    """What the usual mistakes in batch norm's forward pass give for y, each with the sentence that names it."""
    mu, var = x.mean(axis=0), x.var(axis=0)

    def y(mu_: Any, denominator: Any) -> np.ndarray:
        return gamma * (x - mu_) / denominator + beta

    return [
        (y(mu, np.sqrt(x.var(axis=0, ddof=1) + eps)), "It uses the unbiased variance (1/(m-1)); the lecture's "
                                                       "sigma_B^2 divides by m."),
        (y(mu, np.sqrt(var)), "eps is missing: it goes inside the square root, sqrt(var + eps)."),
        (y(mu, np.sqrt(var) + eps), "eps goes inside the square root: sqrt(var + eps), not sqrt(var) + eps."),
        (y(mu, var + eps), "It divides by the variance; normalising divides by the standard deviation."),
        (beta * (x - mu) / np.sqrt(var + eps) + gamma, "gamma and beta are swapped: gamma scales, beta shifts."),
        ((x - mu) / np.sqrt(var + eps), "The scale gamma and shift beta are not applied."),
    ]


def check_forward(fn: Callable, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, where: str) -> None:
    """``fn(x, gamma, beta, eps) -> (y, mu, var, x_hat)`` against BatchNorm1d in training mode, naming the usual
    mistakes (``where`` describes the batch in messages)."""
    __tracebackhide__ = True
    from .checks import call, expect_array_close, expect_true

    import torch

    def batchnorm1d(g: np.ndarray, b: np.ndarray) -> np.ndarray:
        """y of torch's BatchNorm1d in training mode (float64) with weight g and bias b."""
        layer = _torch_bn(1, x.shape[1], 0.1, eps, g, b)
        layer.train()
        return layer(torch.tensor(x)).detach().numpy()

    want_y = batchnorm1d(gamma, beta)
    want_xhat = batchnorm1d(np.ones_like(gamma), np.zeros_like(beta))
    tx = torch.tensor(x)
    want_mu, want_var = tx.mean(dim=0).numpy(), tx.var(dim=0, unbiased=False).numpy()
    mistakes = forward_mistakes(x, gamma, beta, eps)
    out = call(fn, x, gamma, beta, eps, name="batchnorm_forward_train")
    expect_true(isinstance(out, (tuple, list)) and len(out) == 4,
                "batchnorm_forward_train should return the tuple (y, mu, var, x_hat).")
    y, mu, var, x_hat = out
    expect_array_close(mu, want_mu, "mu" + where, hint="One mean per feature, over the examples of the batch.",
                       mistakes=[(x.mean(axis=1), "That is one mean per example: average over the batch (axis 0).")])
    expect_array_close(var, want_var, "var" + where, hint="One variance per feature, over the batch.",
                       mistakes=[(x.var(axis=0, ddof=1), "That is the unbiased variance (1/(m-1)); the lecture's "
                                                         "sigma_B^2 divides by m.")])
    expect_array_close(y, want_y, "y" + where, mistakes=mistakes, hint="Compare your three steps with the formulas.")
    expect_array_close(x_hat, want_xhat, "x_hat" + where, mistakes=[(m_[0] - beta, m_[1]) for m_ in mistakes[:4]])


def _torch_bn(dim: int, channels: int, momentum: float, eps: float, gamma: np.ndarray, beta: np.ndarray) -> Any:
    import torch

    cls = torch.nn.BatchNorm1d if dim == 1 else torch.nn.BatchNorm2d
    layer = cls(channels, eps=eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
    return layer


def _running_candidates(batches: list[np.ndarray], momentum: float, axes: tuple[int, ...]) -> dict[str, tuple]:
    """Running statistics after ``batches`` under the usual wrong rules (the right one is torch's, in the check)."""
    d = batches[0].shape[1]
    n_images = batches[0].shape[0]
    rules = {
        "biased": lambda rm, rv, mu, var, n: ((1 - momentum) * rm + momentum * mu, (1 - momentum) * rv + momentum * var),
        "swapped": lambda rm, rv, mu, var, n: (momentum * rm + (1 - momentum) * mu,
                                               momentum * rv + (1 - momentum) * var * n / (n - 1)),
        "inverted": lambda rm, rv, mu, var, n: ((1 - momentum) * rm + momentum * mu,
                                                (1 - momentum) * rv + momentum * var * (n - 1) / n),
        "batch_only": lambda rm, rv, mu, var, n: ((1 - momentum) * rm + momentum * mu,
                                                  (1 - momentum) * rv + momentum * var * n_images
                                                  / max(n_images - 1, 1)),
    }
    out = {}
    for name, rule in rules.items():
        rm, rv = np.zeros(d), np.ones(d)
        for b in batches:
            n = int(np.prod([b.shape[a] for a in axes]))
            rm, rv = rule(rm, rv, b.mean(axis=axes), b.var(axis=axes), n)
        out[name] = (rm, rv)
    return out


RUNNING_MISTAKES = {
    "biased": "It updates with the biased batch variance; PyTorch's running variance uses the unbiased one, "
              "a factor m/(m-1) larger.",
    "swapped": "The weights are swapped: momentum is the weight of the NEW batch statistic, 1 - momentum that of "
               "the running value.",
    "inverted": "The unbiased correction is upside down: the unbiased variance is the larger one.",
    "batch_only": "The unbiased correction counts only the N images of the batch; a channel's statistics are "
                  "taken over all N*H*W values.",
}


def check_running(update_fn: Callable, eval_fn: Callable, batches: list[np.ndarray], momentum: float, where: str,
                  *, spatial: bool = False, eps: float = 1e-5) -> None:
    """Running statistics after training steps on ``batches``, then the inference output, against torch's
    BatchNorm1d (or BatchNorm2d with ``spatial``), naming the usual mistakes.

    Plain: ``update_fn(running_mean, running_var, mu, var, m, momentum)``; spatial:
    ``update_fn(running_mean, running_var, x, momentum)``. Both return (running_mean, running_var);
    ``eval_fn(x, gamma, beta, running_mean, running_var, eps)`` returns y.
    """
    __tracebackhide__ = True
    import torch

    from .checks import call, expect_array_close, expect_true

    axes = (0, 2, 3) if spatial else (0,)
    d = batches[0].shape[1]
    gamma, beta = np.linspace(0.5, 2, d), np.linspace(-1, 1, d)
    layer = _torch_bn(2 if spatial else 1, d, momentum, eps, gamma, beta)
    layer.train()
    for b in batches:
        layer(torch.tensor(b))
    want_m, want_v = layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()
    x_eval = batches[-1][:1] * 2 + 3
    layer.eval()
    want_y = layer(torch.tensor(x_eval)).detach().numpy()
    candidates = _running_candidates(batches, momentum, axes)
    if not spatial:
        candidates.pop("batch_only")
    name = "spatial_update_running_stats" if spatial else "update_running_stats"
    rm, rv = np.zeros(d), np.ones(d)
    for b in batches:
        if spatial:
            result = call(update_fn, rm, rv, b, momentum, name=name)
        else:
            result = call(update_fn, rm, rv, b.mean(axis=0), b.var(axis=0), b.shape[0], momentum, name=name)
        expect_true(isinstance(result, (tuple, list)) and len(result) == 2,
                    f"{name} should return the pair (running_mean, running_var).")
        rm, rv = result
    expect_array_close(rm, want_m, "running_mean" + where,
                       mistakes=[(candidates["swapped"][0], RUNNING_MISTAKES["swapped"])],
                       hint="Each step keeps (1 - momentum) of the running value and adds momentum times the batch's.")
    expect_array_close(rv, want_v, "running_var" + where,
                       mistakes=[(candidates[k][1], RUNNING_MISTAKES[k]) for k in candidates])
    x_mean, x_var = x_eval.mean(axis=axes, keepdims=True), x_eval.var(axis=axes, keepdims=True)
    shape = (1, d, 1, 1) if spatial else (1, d)
    g, b_, m_, v_ = (a.reshape(shape) for a in (gamma, beta, want_m, want_v))
    mistakes = [
        (g * (x_eval - m_) / np.sqrt(v_) + b_, "eps is missing: it goes inside the square root, as in training."),
        (g * (x_eval - m_) / (v_ + eps) + b_, "It divides by the variance; normalising divides by the standard "
                                               "deviation, sqrt(running_var + eps)."),
        ((x_eval - m_) / np.sqrt(v_ + eps), "The scale gamma and shift beta are not applied."),
    ]
    if x_eval.shape[0] * (x_eval[0, 0].size if spatial else 1) > 1:
        mistakes.append((g * (x_eval - x_mean) / np.sqrt(x_var + eps) + b_,
                         "It normalises with the batch's own statistics; inference uses the running ones."))
    else:
        mistakes.append((b_ + 0 * x_eval, "It normalises a single example with its own statistics (which gives "
                                          "beta); inference uses the running ones."))
    y = call(eval_fn, x_eval, gamma, beta, want_m, want_v, eps,
             name="spatial_batchnorm_eval" if spatial else "batchnorm_forward_eval")
    expect_array_close(y, want_y, "y in inference mode" + where, mistakes=mistakes,
                       hint="Normalise with the running mean and variance it is given, then scale and shift.")


def check_spatial(forward: Callable, backward: Callable, shape: tuple[int, int, int, int], offset: float,
                  where: str, eps: float = 1e-5) -> None:
    """Spatial batch norm (training mode) against ``torch.nn.BatchNorm2d``: y, dx, dgamma, dbeta."""
    __tracebackhide__ = True
    import torch

    from .checks import call, expect_array_close, expect_true

    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape) * 3 + offset
    x += np.arange(shape[1]).reshape(1, -1, 1, 1) * 4.0  # channels with distinct means
    gamma, beta, dy = rng.normal(size=shape[1]), rng.normal(size=shape[1]), rng.normal(size=shape)
    layer = _torch_bn(2, shape[1], 0.1, eps, gamma, beta)
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    (ty * torch.tensor(dy)).sum().backward()
    n, c, h, w = shape
    flat = x.reshape(-1, c)  # the plain reshape: mixes channels
    mixed = ((flat - flat.mean(0)) / np.sqrt(flat.var(0) + eps) * gamma + beta).reshape(shape)
    per_position = (gamma.reshape(1, c, 1, 1) * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta.reshape(1, c, 1, 1))
    mistakes = [
        (mixed, "The statistics mix channels: a plain reshape of (N, C, H, W) into (-1, C) rows does not put one "
                "channel in each column; bring the channel axis last first."),
        (per_position, "Each position is normalised on its own (statistics over N only): a channel's statistics "
                       "run over N, H and W."),
    ]
    y = call(forward, x, gamma, beta, eps, name="spatial_batchnorm_forward")
    expect_array_close(y, ty.detach().numpy(), "spatial_batchnorm_forward" + where, mistakes=mistakes,
                       hint="Statistics per channel, over N, H and W together.")
    out = call(backward, dy, x, gamma, eps, name="spatial_batchnorm_backward")
    expect_true(isinstance(out, (tuple, list)) and len(out) == 3,
                "spatial_batchnorm_backward should return (dx, dgamma, dbeta).")
    expect_array_close(out[0], tx.grad.numpy(), "dx" + where,
                       hint="Arrange dy exactly like x, reuse your backward pass, and undo the arrangement.")
    expect_array_close(out[1], layer.weight.grad.numpy(), "dgamma" + where, batch_size=n * h * w)
    expect_array_close(out[2], layer.bias.grad.numpy(), "dbeta" + where, batch_size=n * h * w)


def _static_training(steps: int, batchnorm: Any = True) -> Any:
    """The explorer as a static figure (``GOINGDEEPER_STATIC=1``): both curves at three learning rates."""
    import matplotlib.pyplot as plt

    rates = (0.05, 0.5, 5.0)
    fig, axes = plt.subplots(1, len(rates), figsize=(13, 3.8), sharey=True)
    for ax, lr in zip(axes, rates):
        runs = [train(batchnorm=flag, lr=lr, steps=steps) for flag in (False, batchnorm)]
        plot_training_curves(runs, ax=ax, title=f"lr {lr:g} (depth 6, sigmoid, init x1)")
    fig.suptitle("The explorer at three learning rates (run the notebook to move the sliders yourself)")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig
