"""Notebook 02's machinery: checks for fully connected layers and networks, gradient-flow measurement, plots.

Conventions (the lecture's, with the batch along the first axis):

* a batch of inputs ``x`` has shape (N, d_0); layer l has ``W`` of shape (d_l, d_{l-1})
  and ``b`` of shape (d_l,), so ``z^l = a^{l-1} W^T + b`` has shape (N, d_l);
* ``params`` is a list of (W, b) pairs, layer 1 first; hidden layers apply the
  activation, the last layer is linear;
* the loss is ``0.5 / N * sum((out - y) ** 2)``, so ``dout = (out - y) / N``: the
  1/N is in ``dout``, and every layer's gradient *sums* over the batch.

The checks run the student's functions and compare with torch autograd in
float64, saying which layer or which quantity is wrong first.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .checks import CheckFailed, as_array, call, expect_array_close, expect_true

__all__ = [
    "check_activation",
    "check_linear",
    "check_mlp",
    "gradient_flow_explorer",
    "gradient_norms",
    "mse_loss",
    "plot_gradient_norms",
    "random_params",
]

TORCH_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def mse_loss(out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """0.5 / N * sum((out - y)^2) and its gradient (out - y) / N. out, y: (N, d_L)."""
    n = out.shape[0]
    diff = out - y
    return 0.5 * float(np.sum(diff**2)) / n, diff / n


def random_params(rng: np.random.Generator, widths: Sequence[int], scale: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) pairs for layer widths [d_0, ..., d_L]: W^l of shape (d_l, d_{l-1})."""
    return [(rng.normal(0, scale / np.sqrt(d_in), size=(d_out, d_in)), rng.normal(0, 0.1, size=d_out))
            for d_in, d_out in zip(widths[:-1], widths[1:])]


def _torch_activation(name: str):
    import torch

    return getattr(torch, TORCH_ACTIVATIONS[name])


def check_linear(linear_forward: Callable, linear_backward: Callable, rng: np.random.Generator,
                 n: int, d_in: int, d_out: int) -> None:
    """Compare linear_forward / linear_backward with torch on one random batch."""
    __tracebackhide__ = True
    import torch

    a_prev, W, b = rng.normal(size=(n, d_in)), rng.normal(size=(d_out, d_in)), rng.normal(size=d_out)
    dz = rng.normal(size=(n, d_out))
    ta, tW, tb = (torch.tensor(v, requires_grad=True) for v in (a_prev, W, b))
    tz = ta @ tW.T + tb
    tz.backward(torch.tensor(dz))
    shapes = f"(N = {n}, d_in = {d_in}, d_out = {d_out})"
    z = call(linear_forward, a_prev, W, b, name="linear_forward")
    expect_array_close(z, tz.detach().numpy(), "z = linear_forward(a_prev, W, b)",
                       hint=f"z = a_prev W^T + b, one row per example {shapes}.")
    result = call(linear_backward, dz, a_prev, W, name="linear_backward")
    expect_true(isinstance(result, (tuple, list)) and len(result) == 3,
                "linear_backward should return three arrays: (da_prev, dW, db).")
    da, dW, db = result
    expect_array_close(da, ta.grad.numpy(), "da_prev", hint=f"da_prev = dz W {shapes}.")
    expect_array_close(dW, tW.grad.numpy(), "dW", batch_size=n,
                       hint=f"dW = dz^T a_prev: error signal times input, summed over the batch {shapes}.")
    expect_array_close(db, tb.grad.numpy(), "db", batch_size=n, hint=f"db sums dz over the batch {shapes}.")


def check_activation(name: str, forward: Callable, backward: Callable, z: np.ndarray, *, hint: str = "") -> None:
    """Compare an activation's forward and backward with torch on the inputs ``z``."""
    __tracebackhide__ = True
    import torch

    tz = torch.tensor(z, requires_grad=True)
    ta = _torch_activation(name)(tz)
    da = np.random.default_rng(0).normal(size=z.shape)
    ta.backward(torch.tensor(da))
    a = call(forward, z, name=f"{name}_forward")
    expect_array_close(a, ta.detach().numpy(), f"{name}_forward(z)", hint=hint)
    dz = call(backward, da, z, name=f"{name}_backward")
    expect_array_close(dz, tz.grad.numpy(), f"{name}_backward(da, z)", hint=hint)


def _torch_mlp(x, params, activation: str, y):
    import torch

    tparams = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in params]
    a = torch.tensor(x)
    f = _torch_activation(activation)
    for i, (W, b) in enumerate(tparams):
        a = a @ W.T + b
        if i < len(tparams) - 1:
            a = f(a)
    loss = 0.5 * torch.sum((a - torch.tensor(y)) ** 2) / x.shape[0]
    loss.backward()
    return a.detach().numpy(), [(W.grad.numpy(), b.grad.numpy()) for W, b in tparams]


def check_mlp(mlp_forward: Callable, mlp_backward: Callable, rng: np.random.Generator, widths: Sequence[int],
              activation: str, n: int) -> None:
    """Run the student's network on a random batch and compare output and every layer's gradients with torch.

    The first wrong layer, counted from the output, is named: that is where the
    recursion for delta went wrong.
    """
    __tracebackhide__ = True
    params = random_params(rng, widths)
    x, y = rng.normal(size=(n, widths[0])), rng.normal(size=(n, widths[-1]))
    want_out, want_grads = _torch_mlp(x, params, activation, y)
    setting = f"(widths {list(widths)}, {activation}, batch of {n})"
    result = call(mlp_forward, x, params, activation, name="mlp_forward")
    expect_true(isinstance(result, (tuple, list)) and len(result) == 2,
                "mlp_forward should return (out, cache).")
    out, cache = result
    expect_array_close(out, want_out, "the network's output", hint=(
        f"Every hidden layer is z = a W^T + b followed by the activation; the last layer has no activation {setting}."))
    _, dout = mse_loss(as_array(out, "out"), y)
    result = call(mlp_backward, dout, cache, params, activation, name="mlp_backward")
    expect_true(isinstance(result, (tuple, list)) and len(result) == 2,
                "mlp_backward should return (grads, deltas).")
    grads, deltas = result
    expect_true(isinstance(grads, (list, tuple)) and len(grads) == len(params),
                f"mlp_backward should return one (dW, db) pair per layer ({len(params)}), layer 1 first.")
    n_layers = len(params)
    for k in range(n_layers, 0, -1):  # from the output back: the first mistake is the one to fix
        dW, db = grads[k - 1]
        try:
            expect_array_close(dW, want_grads[k - 1][0], f"dL/dW^{k}", batch_size=n)
            expect_array_close(db, want_grads[k - 1][1], f"dL/db^{k}", batch_size=n)
        except CheckFailed as exc:
            if k == n_layers:
                advice = ("The last layer has no activation: delta^L = dout, dW^L = (delta^L)^T a^{L-1}.")
            else:
                advice = (f"Layers {k + 1}..{n_layers} are right, so the step from delta^{k + 1} to delta^{k} is "
                          f"wrong: delta^{k} = (delta^{k + 1} W^{k + 1}) * f'(z^{k}), elementwise, with f' the "
                          "activation's derivative at layer k's pre-activation.")
            raise CheckFailed(f"{exc} {advice} {setting}") from None
    expect_true(isinstance(deltas, (list, tuple)) and len(deltas) == n_layers,
                f"mlp_backward should also return the error signals delta^1..delta^{n_layers}, one per layer.")


def gradient_norms(init_weights: Callable, mlp_forward: Callable, mlp_backward: Callable, *, depth: int,
                   width: int = 64, activation: str = "tanh", scheme: str = "xavier", scale: float = 1.0,
                   batch: int = 32, seed: int = 0) -> np.ndarray:
    """||delta^k|| for k = 1..depth through a deep stack built with the student's functions.

    The network has ``depth`` layers of ``width`` units, weights from
    ``init_weights(width, width, scheme, rng)`` times ``scale``, zero biases,
    inputs and targets from a standard normal. Returns an array of shape
    (depth,), layer 1 first.
    """
    rng = np.random.default_rng(seed)
    params = [(scale * np.asarray(init_weights(width, width, scheme, rng)), np.zeros(width)) for _ in range(depth)]
    x, y = rng.normal(size=(batch, width)), rng.normal(size=(batch, width))
    out, cache = mlp_forward(x, params, activation)
    _, dout = mse_loss(np.asarray(out), y)
    _, deltas = mlp_backward(dout, cache, params, activation)
    return np.array([np.linalg.norm(np.asarray(d)) for d in deltas])


def plot_gradient_norms(curves: dict[str, np.ndarray], *, ax=None, title: str = ""):
    """Plot log10 ||delta^k|| against layer k for each labelled curve. Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, norms in curves.items():
        norms = np.asarray(norms, dtype=float)
        with np.errstate(divide="ignore"):
            ax.plot(np.arange(1, len(norms) + 1), np.log10(np.maximum(norms, 1e-300)), label=label)
    ax.set_xlabel("layer k (1 = next to the input)")
    ax.set_ylabel(r"$\log_{10} \|\delta^k\|$")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def gradient_flow_explorer(measure: Callable[..., np.ndarray]) -> Any:
    """An ipywidgets panel: depth, activation, initialisation and scale; redraws the gradient-norm plot live.

    ``measure(depth=, activation=, scheme=, scale=)`` returns the norms per layer
    (notebook 02 passes a function built on the student's own network). With
    ``GOINGDEEPER_STATIC=1`` it returns a static figure of a few settings instead.
    """
    from . import static_mode

    if static_mode():
        return _static_gradient_flow(measure)
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    depth = widgets.IntSlider(value=30, min=2, max=100, description="depth")
    activation = widgets.Dropdown(options=["sigmoid", "tanh", "relu"], value="tanh", description="activation")
    scheme = widgets.Dropdown(options=["small", "xavier", "he", "large"], value="xavier", description="init")
    scale = widgets.FloatLogSlider(value=1.0, base=2, min=-2, max=2, step=0.25, description="scale x")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        norms = measure(depth=depth.value, activation=activation.value, scheme=scheme.value, scale=scale.value)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4))
            plot_gradient_norms({f"{activation.value}, {scheme.value} x {scale.value:g}": norms}, ax=ax,
                                title=f"depth {depth.value}: ||delta^1|| / ||delta^L|| = "
                                      f"{norms[0] / max(norms[-1], 1e-300):.3g}")
            plt.show()

    for control in (depth, activation, scheme, scale):
        control.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox([depth, activation]), widgets.HBox([scheme, scale]), out])
    panel.redraw = redraw  # for tests: redraw without a front end
    return panel


def _static_gradient_flow(measure: Callable[..., np.ndarray]) -> Any:
    """The explorer as a static figure (``GOINGDEEPER_STATIC=1``): what moving each control does, from its defaults."""
    import matplotlib.pyplot as plt

    settings = {
        "depth (tanh, xavier)": {f"depth {d}": dict(depth=d) for d in (10, 30, 100)},
        "scale x (tanh, xavier, depth 30)": {f"scale x {s:g}": dict(scale=s) for s in (0.5, 1.0, 2.0)},
        "activation and init (depth 30)": {f"{a}, {i}": dict(activation=a, scheme=i)
                                           for a, i in (("sigmoid", "xavier"), ("tanh", "xavier"), ("relu", "he"))},
    }
    fig, axes = plt.subplots(1, len(settings), figsize=(15, 3.8), sharey=True)
    for ax, (title, curves) in zip(axes, settings.items()):
        norms = {label: measure(**{"depth": 30, "activation": "tanh", "scheme": "xavier", "scale": 1.0, **change})
                 for label, change in curves.items()}
        plot_gradient_norms(norms, ax=ax, title=title)
    fig.suptitle("The explorer's controls, one at a time (run the notebook to move them yourself)")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig
