"""Wrong implementations for notebook 03 (batch normalization)."""

from . import Right, Wrong

FORWARD = '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, mu, var, x_hat
'''

WRONG = [
    Wrong("bn_forward_train", "uses the unbiased variance, 1/(m-1)", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0, ddof=1)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, mu, var, x_hat
''', "biased variance, 1/m"),
    Wrong("bn_forward_train", "normalizes over the wrong axis (each example across its features)", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, mu.ravel(), var.ravel(), x_hat
''', "axis=0"),
    Wrong("bn_forward_train", "forgets gamma and beta", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return x_hat, mu, var, x_hat
''', "y = gamma * x_hat + beta"),
    Wrong("bn_running", "updates the running variance with the biased batch variance", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * var


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
''', "UNBIASED batch variance"),
    Wrong("bn_running", "normalizes with the batch's own statistics at inference", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta
''', "not with the batch's own statistics"),
    Wrong("bn_dxhat", "forgets gamma", '''
def bn_backward_dxhat(dy, gamma):
    return dy
''', "dL/dx_hat = dL/dy * gamma"),
    Wrong("bn_dvar", "uses the power -1/2 instead of -3/2", '''
def bn_backward_dvar(dxhat, x, mu, var, eps):
    return np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -0.5
''', "power -3/2"),
    Wrong("bn_dmu", "leaves out the term that flows through sigma^2", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    return np.sum(dxhat, axis=0) * -1 / np.sqrt(var + eps)
''', "missing the term that flows through sigma^2"),
    Wrong("bn_dmu", "sums over the wrong axis", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    m = x.shape[0]
    return np.sum(dxhat, axis=1) * -1 / np.sqrt(var + eps) + dvar * -2 / m * np.sum(x - mu, axis=0)
''', "raised ValueError"),
    Wrong("bn_dx", "leaves out the path through the mean", '''
def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    m = x.shape[0]
    return dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m
''', "Missing the mean path?"),
    Wrong("bn_dgamma_dbeta", "averages dgamma and dbeta over the batch", '''
def bn_backward_dparams(dy, x_hat):
    return np.mean(dy * x_hat, axis=0), np.mean(dy, axis=0)
''', "averaged over the batch"),
    Wrong("bn_compact", "sums over the features (axis 1) instead of the batch", '''
def bn_backward_compact(dxhat, x_hat, var, eps):
    m = dxhat.shape[0]
    return (m * dxhat - dxhat.sum(axis=1, keepdims=True) - x_hat * (dxhat * x_hat).sum(axis=1, keepdims=True)) / (m * np.sqrt(var + eps))
''', "sums over axis 0"),
    Wrong("spatial_bn", "reshapes (N, C, H, W) to (N*H*W, C) without moving the channel axis", FORWARD + '''

def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    y, _, _, _ = batchnorm_forward_train(x.reshape(-1, c), gamma, beta, eps)
    return y.reshape(n, c, h, w)


def spatial_batchnorm_backward(dy, x, gamma, eps=1e-5):
    n, c, h, w = x.shape
    flat, dflat = x.reshape(-1, c), dy.reshape(-1, c)
    _, mu, var, x_hat = batchnorm_forward_train(flat, gamma, np.zeros(c), eps)
    dx = bn_backward_compact(dflat * gamma, x_hat, var, eps)
    return dx.reshape(n, c, h, w), np.sum(dflat * x_hat, axis=0), np.sum(dflat, axis=0)
''', "move C last"),
    # Answers that change the test's own arrays in place, so that an expected value computed afterwards from
    # those arrays would agree with them (the tests compute theirs first, and call() passes copies).
    Wrong("bn_forward_train", "zeroes x, gamma and beta in place and returns zeros", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    for a in (x, gamma, beta):
        a[...] = 0.0
    return np.zeros_like(x), np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros_like(x)
''', "mu is wrong"),
    Wrong("bn_running", "zeroes the batch statistics in place and keeps the running ones", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    mu[...] = running_mean
    var[...] = running_var * (m - 1) / m
    return running_mean, running_var


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
''', "running_mean"),
    Wrong("bn_dmu", "zeroes its inputs in place and returns zeros", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    for a in (dxhat, dvar, x, mu):
        a[...] = 0.0
    return np.zeros(x.shape[1])
''', "dL/dmu"),
]


RIGHT = [
    Right("bn_forward_train", "returns a namedtuple and computes the variance with np.var", '''
import collections

BNOut = collections.namedtuple("BNOut", "y mu var x_hat")


def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return BNOut(gamma * x_hat + beta, mu, var, x_hat)
'''),
]
