"""Reference solutions for notebook 02 (vector backprop, fully connected layers, vanishing gradients)."""

from __future__ import annotations

import numpy as np


# vector_grads --------------------------------------------------------------------------
def norm_sq_grads(x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """f = ||W x||^2 for x (d,), W (n, d): returns (q, f, df/dq (n,), df/dW (n, d), df/dx (d,))."""
    q = W @ x
    df_dq = 2 * q
    return q, float(q @ q), df_dq, np.outer(df_dq, x), W.T @ df_dq


# grad_check -------------------------------------------------------------------------------
def numerical_gradient(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    grad = np.zeros_like(x, dtype=float)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


# linear_layer --------------------------------------------------------------------------------
def linear_forward(a_prev, W, b):
    return a_prev @ W.T + b


def linear_backward(dz, a_prev, W):
    return dz @ W, dz.T @ a_prev, dz.sum(axis=0)


# activations -----------------------------------------------------------------------------------
def relu_forward(z):
    return np.maximum(z, 0.0)


def relu_backward(da, z):
    return da * (z > 0)


def sigmoid_forward(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(da, z):
    s = sigmoid_forward(z)
    return da * s * (1 - s)


def tanh_forward(z):
    return np.tanh(z)


def tanh_backward(da, z):
    return da * (1 - np.tanh(z) ** 2)


ACTIVATIONS = {"relu": (relu_forward, relu_backward), "sigmoid": (sigmoid_forward, sigmoid_backward),
               "tanh": (tanh_forward, tanh_backward)}


# network -----------------------------------------------------------------------------------------
def mlp_forward(x, params, activation):
    forward, _ = ACTIVATIONS[activation]
    a, cache = x, []
    for i, (W, b) in enumerate(params):
        z = linear_forward(a, W, b)
        cache.append((a, z))
        a = forward(z) if i < len(params) - 1 else z
    return a, cache


def mlp_backward(dout, cache, params, activation):
    _, backward = ACTIVATIONS[activation]
    grads, deltas = [None] * len(params), [None] * len(params)
    delta = dout
    for k in range(len(params) - 1, -1, -1):
        a_prev, _ = cache[k]
        deltas[k] = delta
        da_prev, dW, db = linear_backward(delta, a_prev, params[k][0])
        grads[k] = (dW, db)
        if k > 0:
            delta = backward(da_prev, cache[k - 1][1])
    return grads, deltas


# init_weights ---------------------------------------------------------------------------------------
STD = {"small": lambda d_in, d_out: 0.01, "xavier": lambda d_in, d_out: np.sqrt(2.0 / (d_in + d_out)),
       "he": lambda d_in, d_out: np.sqrt(2.0 / d_in), "large": lambda d_in, d_out: 1.0}


def init_weights(d_in, d_out, scheme, rng):
    if scheme not in STD:
        raise ValueError(f"unknown scheme {scheme!r}: use one of {sorted(STD)}")
    return rng.normal(0.0, STD[scheme](d_in, d_out), size=(d_out, d_in))


# fit_lambda -----------------------------------------------------------------------------------------
def fit_lambda(norms):
    norms = np.asarray(norms, dtype=float)
    L = len(norms)
    k = np.arange(1, L + 1)
    slope, intercept = np.polyfit(L - k, np.log(norms), 1)
    return float(np.exp(intercept)), float(np.exp(slope))


# softmax_loss ----------------------------------------------------------------------------------
def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(scores) (N, C) against labels y (N,), and d loss / d scores (N, C)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    dscores = np.exp(log_p)
    dscores[np.arange(n), y] -= 1
    return float(-log_p[np.arange(n), y].mean()), dscores / n
