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
    "check_fit_lambda",
    "check_init_weights",
    "check_norm_sq",
    "expect_unchanged",
    "raises",
    "check_linear",
    "check_mlp",
    "check_softmax_cross_entropy",
    "load_digits",
    "plot_classifier_history",
    "train_classifier",
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
    expect_array_close(da, ta.grad.numpy(), "da_prev", hint=f"Every input a_prev_j reaches every output z_i through W_ij: the chain rule adds those paths. Check the shapes {shapes}.")
    expect_array_close(dW, tW.grad.numpy(), "dW", batch_size=n,
                       hint=f"W_ij connects input j to output i: its gradient is error signal times input, collected over the batch {shapes}.")
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


def check_mlp(mlp_forward: Callable, mlp_backward: Callable, rng: np.random.Generator, widths: Sequence[int],
              activation: str, n: int) -> None:
    """Run the student's network on a random batch and compare output and every layer's gradients with torch.

    The first wrong layer, counted from the output, is named: that is where the
    recursion for delta went wrong.
    """
    __tracebackhide__ = True

    # The oracle is a local of this check: nothing the student imports returns a network's gradients.
    def _torch_mlp(x, params, activation: str, y):
        """Output, every layer's (dW, db) and every layer's delta = dL/dz, from torch autograd (float64)."""
        import torch

        tparams = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in params]
        a = torch.tensor(x)
        f = _torch_activation(activation)
        zs = []
        for i, (W, b) in enumerate(tparams):
            z = a @ W.T + b
            z.retain_grad()
            zs.append(z)
            a = f(z) if i < len(tparams) - 1 else z
        loss = 0.5 * torch.sum((a - torch.tensor(y)) ** 2) / x.shape[0]
        loss.backward()
        return (a.detach().numpy(), [(W.grad.numpy(), b.grad.numpy()) for W, b in tparams],
                [z.grad.numpy() for z in zs])

    params = random_params(rng, widths)
    x, y = rng.normal(size=(n, widths[0])), rng.normal(size=(n, widths[-1]))
    want_out, want_grads, want_deltas = _torch_mlp(x, params, activation, y)
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
    n_layers = len(params)
    expect_true(isinstance(grads, (list, tuple)) and len(grads) == n_layers,
                f"mlp_backward returned {len(grads) if isinstance(grads, (list, tuple)) else 'no list of'} gradient "
                f"pairs for a network of {n_layers} layers: one (dW, db) pair per layer, layer 1 first (did the loop "
                "skip a layer?).")
    expect_true(isinstance(deltas, (list, tuple)) and len(deltas) == n_layers,
                f"mlp_backward should return the error signals delta^1..delta^{n_layers}, one per layer "
                f"(got {len(deltas) if isinstance(deltas, (list, tuple)) else type(deltas).__name__}).")
    for k in range(n_layers, 0, -1):  # from the output back: the first mistake is the one to fix
        pair = grads[k - 1]
        expect_true(isinstance(pair, (list, tuple)) and len(pair) == 2,
                    f"grads[{k - 1}] should be the pair (dW^{k}, db^{k}), not {type(pair).__name__}.")
        dW, db = pair
        try:
            expect_array_close(dW, want_grads[k - 1][0], f"dL/dW^{k}", batch_size=n)
            expect_array_close(db, want_grads[k - 1][1], f"dL/db^{k}", batch_size=n)
            expect_array_close(deltas[k - 1], want_deltas[k - 1], f"delta^{k}", batch_size=n)
        except CheckFailed as exc:
            if k == n_layers:
                advice = ("The last layer has no activation: its error signal is the upstream gradient itself, and its weight "
                          "gradient comes as in linear_backward.")
            else:
                advice = (f"Layers {k + 1}..{n_layers} are right, so the step from delta^{k + 1} to delta^{k} is "
                          f"wrong: it goes back through W^{k + 1}, then through the activation's derivative at "
                          f"layer {k}'s pre-activation z^{k}.")
            raise CheckFailed(f"{exc} {advice} {setting}") from None


def check_norm_sq(fn: Callable, x: np.ndarray, W: np.ndarray, *, reveal: bool = True, where: str = "") -> None:
    """``fn(x, W) -> (q, f, df_dq, df_dW, df_dx)`` for f = ||Wx||^2 against torch autograd.

    With ``reveal=False`` the messages do not print the expected values (the lecture's blanks)."""
    __tracebackhide__ = True
    import torch

    from .checks import expect_close

    tx, tW = torch.tensor(x, requires_grad=True), torch.tensor(W, requires_grad=True)
    tq = tW @ tx
    tq.retain_grad()
    tf = torch.sum(tq ** 2)
    tf.backward()
    result = call(fn, x, W, name="norm_sq_grads")
    expect_true(isinstance(result, (tuple, list)) and len(result) == 5,
                "norm_sq_grads should return (q, f, df_dq, df_dW, df_dx).")
    q, f, df_dq, df_dW, df_dx = result
    shape = f" (W of shape {W.shape}){where}"
    hints = {
        "q": "q = W x: each q_i combines the whole of x with row i of W.",
        "f": "f = ||q||^2, the sum of the squares of q's components.",
        "df_dq": "Only the term q_i^2 of f depends on q_i.",
        "df_dW": "W_ij reaches f only through q_i, and d q_i / d W_ij is x_j: a matrix shaped like W.",
        "df_dx": "x_j reaches f through every q_i (through W_ij): the paths add; a vector shaped like x.",
    }
    if reveal:
        expect_array_close(q, tq.detach().numpy(), "q" + shape, hint=hints["q"])
        expect_close(f, float(tf.detach()), "f" + shape, hint=hints["f"])
        expect_array_close(df_dq, tq.grad.numpy(), "df_dq" + shape, hint=hints["df_dq"])
        expect_array_close(df_dW, tW.grad.numpy(), "df_dW" + shape, hint=hints["df_dW"])
        expect_array_close(df_dx, tx.grad.numpy(), "df_dx" + shape, hint=hints["df_dx"])
        return
    for name, got, want in [("q", q, tq.detach().numpy()), ("f", f, float(tf.detach())),
                            ("df_dq", df_dq, tq.grad.numpy()), ("df_dW", df_dW, tW.grad.numpy()),
                            ("df_dx", df_dx, tx.grad.numpy())]:
        got_arr, want_arr = as_array(got, name), np.asarray(want, dtype=float)
        if got_arr.shape != want_arr.shape:
            transposed = " (it looks transposed)" if got_arr.ndim == 2 and got_arr.shape == want_arr.T.shape else ""
            raise CheckFailed(f"{name} has shape {got_arr.shape} but should have shape {want_arr.shape}{transposed}"
                              f"{shape}. A gradient has the shape of the variable it differentiates with respect to.")
        if not np.allclose(got_arr, want_arr, rtol=1e-6, atol=1e-9):
            raise CheckFailed(f"{name} is wrong{shape}. {hints[name]}")


def expect_unchanged(x: np.ndarray, before: np.ndarray, what: str) -> None:
    """``x`` still holds ``before`` (to within 1e-12 relative: a value put back by adding and subtracting h)."""
    __tracebackhide__ = True
    x = as_array(x, "x")
    if not np.allclose(x, before, rtol=1e-12, atol=1e-300):
        worst = np.unravel_index(int(np.argmax(np.abs(x - before))), x.shape)
        raise CheckFailed(f"{what} changed x: x{list(worst)} is {x[worst]:.6g} afterwards, {before[worst]:.6g} before. "
                          "Put every entry back after nudging it (keep the old value, restore it).")


def raises(fn: Callable, *args: Any) -> BaseException | None:
    """The exception ``fn(*args)`` raises, or None."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the caller inspects it
        return exc
    return None


def check_init_weights(init_weights: Callable, d_in: int, d_out: int, scheme: str, std: float, *, seed: int,
                       where: str = "") -> None:
    """Shape, mean, standard deviation and normality of ``init_weights(d_in, d_out, scheme, rng)``, and that it
    draws from ``rng`` (two generators with the same seed give the same weights)."""
    __tracebackhide__ = True
    from .checks import expect_close

    label = f"init_weights(d_in={d_in}, d_out={d_out}, {scheme!r}){where}"
    W = as_array(call(init_weights, d_in, d_out, scheme, np.random.default_rng(seed), name="init_weights"), label)
    expect_true(W.shape == (d_out, d_in), f"{label} has shape {W.shape}, not (d_out, d_in) = {(d_out, d_in)}.")
    again = as_array(call(init_weights, d_in, d_out, scheme, np.random.default_rng(seed), name="init_weights"), label)
    expect_true(np.array_equal(W, again), f"{label} gave different weights for two generators with the same seed: "
                                          "draw from the rng you are given (rng.normal), not from np.random.")
    expect_close(W.std(), std, f"the standard deviation of {label}", rtol=0.03,
                 hint="Xavier: sqrt(2 / (d_in + d_out)); He: sqrt(2 / d_in).")
    expect_close(W.mean(), 0.0, f"the mean of {label}", atol=0.05 * std)
    inside = float(np.mean(np.abs(W) < std))
    expect_true(abs(inside - 0.6827) < 0.02, f"{inside:.1%} of {label}'s weights lie within one standard deviation of "
                f"0; for normal samples it is 68.3 %. Draw from a normal distribution (rng.normal), not a uniform one.")


def check_fit_lambda(fit_lambda: Callable, norms: np.ndarray, C: float, lam: float, where: str) -> None:
    """``fit_lambda(norms) -> (C, lam)`` against the known values, naming the usual mistakes."""
    __tracebackhide__ = True
    from .checks import expect_close, unpack

    C_got, lam_got = unpack(call(fit_lambda, norms, name="fit_lambda"), ("C", "lam"), "fit_lambda(norms)")
    L = len(norms)
    if not np.isclose(lam_got, lam, rtol=1e-6):
        if np.isclose(lam_got, C, rtol=1e-6) and np.isclose(C_got, lam, rtol=1e-6):
            hint = "You return (lambda, C): return them in the order (C, lam)."
        elif lam > 0 and lam != 1 and np.isclose(lam_got, np.exp(1 / np.log(lam)), rtol=1e-6):
            hint = ("Your fit has its axes swapped: np.polyfit(x, y, 1) fits y against x, and here x is the exponent "
                    "L - k and y is log(norm); you fitted the exponent against the log-norms.")
        elif lam > 0 and np.isclose(lam_got, 1 / lam, rtol=1e-6):
            hint = ("Your lambda is 1 / lambda: the exponent runs the other way. It is L - k, counted from the "
                    "OUTPUT layer: layer L has exponent 0, layer 1 has L - 1.")
        elif np.isclose(lam_got, np.log(lam), rtol=1e-6):
            hint = "Your lambda is log(lambda): the fitted slope is log(lambda); return exp(slope)."
        else:
            hint = "Fit a straight line to (L - k, log norms_k): its slope is log(lambda), its intercept log(C)."
        expect_close(lam_got, lam, "lambda" + where, rtol=1e-6, hint=hint)
    if not np.isclose(C_got, C, rtol=1e-6):
        if L > 1 and np.isclose(C_got, C * lam ** (L - 1), rtol=1e-6):
            hint = "Your C is the norm at layer 1; C is the norm at layer L, where the exponent L - k is 0."
        elif np.isclose(C_got, np.log(C), rtol=1e-6):
            hint = "Your C is log(C): the intercept of the line is log(C); return exp(intercept)."
        else:
            hint = "C is exp(intercept) of the line through (L - k, log norms_k)."
        expect_close(C_got, C, "C" + where, rtol=1e-6, hint=hint)


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


# -- closing the loop: a real classification task --------------------------------------------------------
def load_digits(test_share: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Handwritten digits: 1,797 grey images of 8x8 pixels, 10 classes (UCI "Optical Recognition of
    Handwritten Digits", E. Alpaydin and C. Kaynak, 1998; CC BY 4.0; the copy scikit-learn ships).

    Returns (x_train, y_train, x_test, y_test): x float64 (N, 64) scaled to [0, 1], y int64 (N,), a random
    split with ``test_share`` of the images held out (the same seed, the same split).
    """
    from pathlib import Path

    with np.load(Path(__file__).resolve().parent / "data" / "digits.npz") as data:
        x = data["images"].reshape(-1, 64).astype(np.float64) / 16.0
        y = data["labels"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_share)))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def check_softmax_cross_entropy(loss_fn: Callable, scores: np.ndarray, y: np.ndarray, where: str = "") -> None:
    """``loss_fn(scores, y) -> (loss, dscores)`` against torch's mean cross-entropy and its gradient."""
    __tracebackhide__ = True
    import torch

    ts = torch.tensor(scores, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(ts, torch.tensor(y))
    loss.backward()
    want_loss, want_grad = float(loss.detach()), ts.grad.numpy()
    result = call(loss_fn, scores, y, name="softmax_cross_entropy")
    expect_true(isinstance(result, (tuple, list)) and len(result) == 2,
                "softmax_cross_entropy should return (loss, dscores).")
    from .checks import expect_close

    n = scores.shape[0]
    expect_close(result[0], want_loss, "the loss" + where, rtol=1e-7, atol=1e-10,
                 hint="The mean over the batch of -log(softmax(scores)[label]). Subtract each row's maximum first, "
                      "so that exp never overflows: softmax does not change when a row is shifted.")
    expect_array_close(result[1], want_grad, "dscores" + where, batch_size=n,
                       hint="Differentiate -log(softmax(scores)[label]) with respect to every score, the label's and the "
                            "others', and keep the mean's 1/N.")


def unpack_pair(result: Any, name: str) -> tuple[Any, Any]:
    """``a, b = result``, with a message in words when ``name`` returned something else."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"{name} should return a pair (two values in a tuple), but returned "
                          f"{type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
                          + ".")
    return result[0], result[1]


def train_classifier(mlp_forward: Callable, mlp_backward: Callable, loss_fn: Callable,
                     data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], *, widths: Sequence[int],
                     activation: str = "relu", lr: float = 0.5, epochs: int = 30, batch: int = 64,
                     seed: int = 0) -> dict[str, list[float]]:
    """Plain SGD on ``data`` with the student's network and loss: He-initialised weights, zero biases.

    Every step: ``out, cache = mlp_forward(x, params, activation)``, ``loss, dout = loss_fn(out, y)``,
    ``grads, _ = mlp_backward(dout, cache, params, activation)``, then ``W -= lr * dW`` and ``b -= lr * db``.
    Returns the history: the mean training loss, and the training and test accuracy, after every epoch.
    """
    x_train, y_train, x_test, y_test = data
    rng = np.random.default_rng(seed)
    params = [(rng.normal(0, np.sqrt(2.0 / d_in), size=(d_out, d_in)), np.zeros(d_out))
              for d_in, d_out in zip(widths[:-1], widths[1:])]
    history: dict[str, list[float]] = {"loss": [], "train_accuracy": [], "test_accuracy": []}

    # Every call goes through ``call``: arguments are copied (the student's code may change them in place,
    # and the loop uses them again), and an exception or warning becomes a message in words.
    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        out, _ = unpack_pair(call(mlp_forward, x, params, activation, name="mlp_forward"), "mlp_forward")
        return float(np.mean(np.argmax(np.asarray(out), axis=1) == y))

    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        losses = []
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start:start + batch]
            out, cache = unpack_pair(call(mlp_forward, x_train[idx], params, activation, name="mlp_forward"),
                                     "mlp_forward")
            loss, dout = unpack_pair(call(loss_fn, np.asarray(out), y_train[idx], name="softmax_cross_entropy"),
                                     "softmax_cross_entropy")
            grads, _ = unpack_pair(call(mlp_backward, np.asarray(dout), cache, params, activation, name="mlp_backward"),
                                   "mlp_backward")
            params = [(W - lr * np.asarray(dW), b - lr * np.asarray(db)) for (W, b), (dW, db) in zip(params, grads)]
            losses.append(float(loss))
        history["loss"].append(float(np.mean(losses)))
        history["train_accuracy"].append(accuracy(x_train, y_train))
        history["test_accuracy"].append(accuracy(x_test, y_test))
    return history


def plot_classifier_history(history: dict[str, list[float]], title: str = ""):
    """Training loss (left) and training and test accuracy (right) against epochs. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history["loss"]) + 1)
    left.plot(epochs, history["loss"])
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy (training)")
    right.plot(epochs, history["train_accuracy"], label="training")
    right.plot(epochs, history["test_accuracy"], label="test")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.legend()
    fig.suptitle(title or "your network on handwritten digits")
    fig.tight_layout()


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
