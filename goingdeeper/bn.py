"""Notebook 03's machinery: torch oracles for batch normalization, and the experiments behind the lecture's figures.

Conventions (the lecture's): a batch ``x`` of shape (m, D), statistics per
feature over the batch axis, the *biased* batch variance
``sigma_B^2 = 1/m * sum (x_i - mu_B)^2`` in training, ``eps`` inside the square
root. PyTorch normalizes with the same biased variance, but updates its
running variance with the *unbiased* one (``m / (m - 1)`` times larger);
:func:`torch_bn_running` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "Run",
    "activation_percentiles_figure",
    "bn_intermediate_grads",
    "gradient_norms_at_init",
    "plot_training_curves",
    "torch_bn_running",
    "torch_bn_train",
    "train",
    "training_explorer",
]


def torch_bn_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """y from ``torch.nn.BatchNorm1d`` in training mode (float64). x: (m, D)."""
    import torch

    layer = torch.nn.BatchNorm1d(x.shape[1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
    layer.train()
    return layer(torch.tensor(x)).detach().numpy()


def torch_bn_running(batches: list[np.ndarray], eps: float, momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """The running mean and variance of ``torch.nn.BatchNorm1d`` after training steps on ``batches``.

    Starts from mean 0 and variance 1; each step: running = (1 - momentum) * running + momentum * batch_stat,
    with the batch variance *unbiased* (divided by m - 1).
    """
    import torch

    layer = torch.nn.BatchNorm1d(batches[0].shape[1], eps=eps, momentum=momentum, dtype=torch.float64)
    layer.train()
    for batch in batches:
        layer(torch.tensor(batch))
    return layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()


def bn_intermediate_grads(x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Forward values and torch autograd's gradient of L = sum(y * dy) at every intermediate of BN.

    Returns a dict with mu, var, x_hat (forward) and dx_hat, dvar, dmu, dx, dgamma, dbeta (backward),
    each the *total* derivative of L, as the lecture's steps compute them.
    """
    import torch

    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    mu = tx.mean(dim=0)
    var = ((tx - mu) ** 2).mean(dim=0)
    x_hat = (tx - mu) / torch.sqrt(var + eps)
    for t in (mu, var, x_hat):
        t.retain_grad()
    y = tg * x_hat + tb
    (y * torch.tensor(dy)).sum().backward()
    return {
        "mu": mu.detach().numpy(), "var": var.detach().numpy(), "x_hat": x_hat.detach().numpy(),
        "dx_hat": x_hat.grad.numpy(), "dvar": var.grad.numpy(), "dmu": mu.grad.numpy(), "dx": tx.grad.numpy(),
        "dgamma": tg.grad.numpy(), "dbeta": tb.grad.numpy(),
    }


# -- experiments ---------------------------------------------------------------------------------
@dataclass
class Run:
    """What one training run recorded. ``percentiles[layer]`` has shape (records, 3): 15th, 50th, 85th."""

    label: str
    losses: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    percentiles: dict[int, list[list[float]]] = field(default_factory=dict)
    diverged: bool = False


def _data(n: int, seed: int) -> tuple[Any, Any]:
    """A 10-class problem in 32 dimensions: noisy Gaussian clusters (a stand-in for image features)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 32, generator=g) * 1.5
    labels = torch.randint(0, 10, (n,), generator=g)
    inputs = centres[labels] + torch.randn(n, 32, generator=g)
    return inputs, labels


def make_mlp(depth: int, width: int, *, batchnorm: bool, activation: str = "sigmoid", init_scale: float = 1.0,
             seed: int = 0):
    """depth hidden layers of ``width``: Linear -> (BatchNorm1d) -> activation; then a Linear to 10 classes.

    Weights are N(0, (init_scale / sqrt(fan_in))^2), biases 0.
    """
    import torch

    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    layers: list[Any] = []
    d = 32
    for _ in range(depth):
        linear = torch.nn.Linear(d, width)
        with torch.no_grad():
            linear.weight.normal_(0, init_scale / d**0.5)
            linear.bias.zero_()
        layers += [linear] + ([torch.nn.BatchNorm1d(width)] if batchnorm else []) + [act()]
        d = width
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


def train(*, batchnorm: bool, lr: float, steps: int, depth: int = 6, width: int = 64, activation: str = "sigmoid",
          init_scale: float = 1.0, batch: int = 64, record_every: int = 10, seed: int = 0,
          watch: tuple[int, ...] = ()) -> Run:
    """Plain SGD on the cluster problem; records the loss and, for hidden layers in ``watch`` (1-based),
    the 15th/50th/85th percentiles of their pre-activation inputs to the nonlinearity on a fixed batch."""
    import torch

    inputs, labels = _data(4096, seed)
    probe = inputs[:512]
    model = make_mlp(depth, width, batchnorm=batchnorm, activation=activation, init_scale=init_scale, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    run = Run(f"{'BN' if batchnorm else 'no BN'}, lr {lr:g}, init x{init_scale:g}")
    nonlinear = [m for m in model if isinstance(m, (torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.ReLU))]
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps + 1):
        if step % record_every == 0:
            model.eval()  # the loss as the model would predict (BN: running statistics)
            with torch.no_grad():
                full_loss = torch.nn.functional.cross_entropy(model(inputs[:1024]), labels[:1024]).item()
            # What the watched layers see while training (BN: batch statistics), without moving
            # the running statistics (momentum 0 for this one forward pass).
            model.train()
            norms = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.momentum = 0.0
            captured: dict[int, Any] = {}
            hooks = [nonlinear[k - 1].register_forward_hook(
                lambda mod, inp, out, k=k: captured.__setitem__(k, inp[0].detach())) for k in watch]
            with torch.no_grad():
                model(probe)
            for h in hooks:
                h.remove()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            for k, acts in captured.items():
                run.percentiles.setdefault(k, []).append(
                    torch.quantile(acts.flatten()[:20000], torch.tensor([0.15, 0.5, 0.85])).tolist())
            run.steps.append(step)
            run.losses.append(full_loss if np.isfinite(full_loss) else float("nan"))
            if not np.isfinite(full_loss) or full_loss > 1e3:
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


def gradient_norms_at_init(*, batchnorm: bool, depth: int = 20, width: int = 64, activation: str = "sigmoid",
                           init_scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """||dL/dW|| for each hidden layer's weights (layer 1 first) at initialisation, on one batch of 256."""
    import torch

    inputs, labels = _data(256, seed)
    model = make_mlp(depth, width, batchnorm=batchnorm, activation=activation, init_scale=init_scale, seed=seed)
    model.train()
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)][:-1]
    return np.array([m.weight.grad.norm().item() for m in linears])


def activation_percentiles_figure(runs: list[Run], layer: int):
    """The internal-covariate-shift figure: percentiles of one layer's inputs over training, one panel per run."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.5), sharey=True)
    for ax, run in zip(np.atleast_1d(axes), runs):
        p = np.array(run.percentiles[layer])
        steps = run.steps[: len(p)]
        for i, style in enumerate(["--", "-", "--"]):
            ax.plot(steps, p[:, i], style, color="C0")
        ax.fill_between(steps, p[:, 0], p[:, 2], alpha=0.15)
        ax.set_title(f"{run.label}: layer {layer}'s input to the nonlinearity")
        ax.set_xlabel("training step")
        ax.set_ylabel("15th, 50th, 85th percentile")
    fig.tight_layout()
    return fig


def plot_training_curves(runs: list[Run], *, ax=None, title: str = ""):
    """Loss against step for each run; a diverged run ends with an x."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        line, = ax.plot(run.steps, run.losses, label=run.label)
        if run.diverged:
            ax.plot(run.steps[-1:], [min(run.losses[-1] if np.isfinite(run.losses[-1]) else 5, 5)], "x",
                    color=line.get_color(), markersize=10)
    ax.set_ylim(0, 5)
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def training_explorer(steps: int = 200) -> Any:
    """An ipywidgets panel: learning rate, init scale, depth and activation; trains with and without BN and
    redraws both loss curves. With ``GOINGDEEPER_STATIC=1`` it returns a static figure of a few settings instead."""
    from . import static_mode

    if static_mode():
        return _static_training(steps)
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    lr = widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=1, step=0.25, description="lr")
    scale = widgets.FloatLogSlider(value=1.0, base=2, min=-2, max=2, step=0.5, description="init x")
    depth = widgets.IntSlider(value=6, min=1, max=20, description="depth")
    activation = widgets.Dropdown(options=["sigmoid", "tanh", "relu"], value="sigmoid", description="activation")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        runs = [train(batchnorm=bn, lr=lr.value, steps=steps, depth=depth.value, activation=activation.value,
                      init_scale=scale.value) for bn in (False, True)]
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


def check_step(fn: Callable, args: tuple, want: np.ndarray, name: str, hint: str, *, batch_size: int | None = None):
    """Call one backward step of the student's and compare it with torch's gradient of the same intermediate."""
    __tracebackhide__ = True
    from .checks import call, expect_array_close

    expect_array_close(call(fn, *args, name=getattr(fn, "__name__", name)), want, name, hint=hint,
                       rtol=1e-6, atol=1e-9, batch_size=batch_size)


def step_data(seed: int = 3, m: int = 6, d: int = 4, offset: float = 12.0, eps: float = 1e-5) -> dict[str, Any]:
    """The batch the backward-step tests use: x (m, d) with a large offset, gamma, dy, eps, and torch's
    forward values and gradients at every intermediate (see :func:`bn_intermediate_grads`).

    Each test cell computes it itself, so no value the tests compare with comes from the student's namespace.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d)) * 5 + offset
    gamma, dy = rng.normal(size=d), rng.normal(size=(m, d))
    return {"x": x, "gamma": gamma, "dy": dy, "eps": eps, **bn_intermediate_grads(x, gamma, dy, eps)}


def _static_training(steps: int) -> Any:
    """The explorer as a static figure (``GOINGDEEPER_STATIC=1``): both curves at three learning rates."""
    import matplotlib.pyplot as plt

    rates = (0.01, 0.1, 1.0)
    fig, axes = plt.subplots(1, len(rates), figsize=(15, 3.8), sharey=True)
    for ax, lr in zip(axes, rates):
        runs = [train(batchnorm=bn, lr=lr, steps=steps) for bn in (False, True)]
        plot_training_curves(runs, ax=ax, title=f"lr {lr:g} (depth 6, sigmoid, init x1)")
    fig.suptitle("The explorer at three learning rates (run the notebook to move the sliders yourself)")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig
