"""Reference solutions for notebook 03 (batch normalization)."""

from __future__ import annotations

import numpy as np


def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, mu, var, x_hat


def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def bn_backward_dxhat(dy, gamma):
    return dy * gamma


def bn_backward_dvar(dxhat, x, mu, var, eps):
    return np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -1.5


def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    m = x.shape[0]
    return np.sum(dxhat, axis=0) * -1 / np.sqrt(var + eps) + dvar * -2 / m * np.sum(x - mu, axis=0)


def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    m = x.shape[0]
    return dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu / m


def bn_backward_dparams(dy, x_hat):
    return np.sum(dy * x_hat, axis=0), np.sum(dy, axis=0)


def bn_backward_compact(dxhat, x_hat, var, eps):
    m = dxhat.shape[0]
    return (m * dxhat - dxhat.sum(axis=0) - x_hat * (dxhat * x_hat).sum(axis=0)) / (m * np.sqrt(var + eps))


def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    y, _, _, _ = batchnorm_forward_train(flat, gamma, beta, eps)
    return y.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def spatial_batchnorm_backward(dy, x, gamma, eps=1e-5):
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    dflat = dy.transpose(0, 2, 3, 1).reshape(-1, c)
    _, mu, var, x_hat = batchnorm_forward_train(flat, gamma, np.zeros(c), eps)
    dx = bn_backward_compact(dflat * gamma, x_hat, var, eps)
    dgamma, dbeta = bn_backward_dparams(dflat, x_hat)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_update_running_stats(running_mean, running_var, x, momentum=0.1):
    """BatchNorm2d's running statistics after one training step on x (N, C, H, W): NHW values per channel."""
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    return update_running_stats(running_mean, running_var, flat.mean(axis=0), flat.var(axis=0), n * h * w, momentum)


def spatial_batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """BatchNorm2d in inference mode. x: (N, C, H, W). Returns y: (N, C, H, W)."""
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    y = batchnorm_forward_eval(flat, gamma, beta, running_mean, running_var, eps)
    return y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
