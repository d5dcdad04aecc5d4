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
''', "divides by m"),
    Wrong("bn_forward_train", "normalizes over the wrong axis (each example across its features)", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, mu.ravel(), var.ravel(), x_hat
''', "One mean per feature"),
    Wrong("bn_forward_train", "forgets gamma and beta", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return x_hat, mu, var, x_hat
''', "gamma and shift beta are not applied"),
    Wrong("bn_forward_train", "leaves eps out", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var)
    return gamma * x_hat + beta, mu, var, x_hat
''', "eps is missing"),
    Wrong("bn_forward_train", "adds eps outside the square root", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / (np.sqrt(var) + eps)
    return gamma * x_hat + beta, mu, var, x_hat
''', "eps goes inside the square root"),
    Wrong("bn_running", "updates the running variance with the biased batch variance", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * var


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
''', "It updates with the biased batch variance"),
    Wrong("bn_running", "swaps the weights of the running value and the batch statistic", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return momentum * running_mean + (1 - momentum) * mu, momentum * running_var + (1 - momentum) * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
''', "The weights are swapped"),
    Wrong("bn_running", "divides by the running variance at inference, not by the standard deviation", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / (running_var + eps) + beta
''', "It divides by the variance"),
    Wrong("bn_running", "leaves eps out at inference", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var) + beta
''', "eps is missing"),
    Wrong("bn_running", "normalizes with the batch's own statistics at inference", '''
def update_running_stats(running_mean, running_var, mu, var, m, momentum=0.1):
    unbiased = var * m / (m - 1)
    return (1 - momentum) * running_mean + momentum * mu, (1 - momentum) * running_var + momentum * unbiased


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta
''', "with its own statistics"),
    Wrong("bn_dxhat", "forgets gamma", '''
def bn_backward_dxhat(dy, gamma):
    return dy
''', "gamma is missing"),
    Wrong("bn_dvar", "uses the power -1/2 instead of -3/2", '''
def bn_backward_dvar(dxhat, x, mu, var, eps):
    return np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -0.5
''', "The power is off"),
    Wrong("bn_dvar", "leaves eps out", '''
def bn_backward_dvar(dxhat, x, mu, var, eps):
    return np.sum(dxhat * (x - mu), axis=0) * -0.5 * var ** -1.5
''', "eps is missing"),
    Wrong("bn_dvar", "forgets the factor -1/2 of the power rule", '''
def bn_backward_dvar(dxhat, x, mu, var, eps):
    return np.sum(dxhat * (x - mu), axis=0) * (var + eps) ** -1.5
''', "The factor that the power rule brings down"),
    Wrong("bn_dmu", "leaves out the term that flows through sigma^2", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    return np.sum(dxhat, axis=0) * -1 / np.sqrt(var + eps)
''', "The path through sigma^2 is missing"),
    Wrong("bn_dmu", "drops the factor 2 of the square in the path through sigma^2", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    m = x.shape[0]
    return np.sum(dxhat, axis=0) * -1 / np.sqrt(var + eps) + dvar * -1 / m * np.sum(x - mu, axis=0)
''', "a factor 2 is missing"),
    Wrong("bn_dmu", "sums over the wrong axis", '''
def bn_backward_dmu(dxhat, dvar, x, mu, var, eps):
    m = x.shape[0]
    return np.sum(dxhat, axis=1) * -1 / np.sqrt(var + eps) + dvar * -2 / m * np.sum(x - mu, axis=0)
''', "raised ValueError"),
    Wrong("bn_dx", "leaves out the path through the mean", '''
def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    m = x.shape[0]
    return dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m
''', "The path through mu_B is missing"),
    Wrong("bn_dx", "leaves out the path through the variance", '''
def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    m = x.shape[0]
    return dxhat / np.sqrt(var + eps) + dmu / m
''', "The path through sigma^2 is missing"),
    Wrong("bn_dx", "forgets the 1/m of the mean in the path through mu", '''
def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    m = x.shape[0]
    return dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu
''', "In the path through mu_B the factor 1/m is missing"),
    Wrong("bn_dgamma_dbeta", "averages dgamma and dbeta over the batch", '''
def bn_backward_dparams(dy, x_hat):
    return np.mean(dy * x_hat, axis=0), np.mean(dy, axis=0)
''', "averaged over the batch"),
    Wrong("bn_dgamma_dbeta", "returns dbeta first and dgamma second", '''
def bn_backward_dparams(dy, x_hat):
    return np.sum(dy, axis=0), np.sum(dy * x_hat, axis=0)
''', "gamma multiplies x_hat_i"),
    Wrong("bn_compact", "sums over the features (axis 1) instead of the batch", '''
def bn_backward_compact(dxhat, x_hat, var, eps):
    m = dxhat.shape[0]
    return (m * dxhat - dxhat.sum(axis=1, keepdims=True) - x_hat * (dxhat * x_hat).sum(axis=1, keepdims=True)) / (m * np.sqrt(var + eps))
''', "term by term"),
    Wrong("bn_compact", "loses the term of the variance path", '''
def bn_backward_compact(dxhat, x_hat, var, eps):
    m = dxhat.shape[0]
    return (m * dxhat - dxhat.sum(axis=0)) / (m * np.sqrt(var + eps))
''', "The term that comes from the variance path"),
    Wrong("bn_compact", "forgets the 1/m in front", '''
def bn_backward_compact(dxhat, x_hat, var, eps):
    m = dxhat.shape[0]
    return (m * dxhat - dxhat.sum(axis=0) - x_hat * (dxhat * x_hat).sum(axis=0)) / np.sqrt(var + eps)
''', "m times too large"),
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
''', "The statistics mix channels"),
    Wrong("spatial_bn", "normalizes every position separately (statistics over N only)", '''
def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    return gamma.reshape(1, -1, 1, 1) * (x - mu) / np.sqrt(var + eps) + beta.reshape(1, -1, 1, 1)


def spatial_batchnorm_backward(dy, x, gamma, eps=1e-5):
    raise NotImplementedError()
''', "Each position is normalised on its own"),
    Wrong("spatial_bn_running", "counts only the N images in the unbiased correction", '''
def spatial_update_running_stats(running_mean, running_var, x, momentum=0.1):
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    return update_running_stats(running_mean, running_var, flat.mean(axis=0), flat.var(axis=0), n, momentum)


def spatial_batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    y = batchnorm_forward_eval(flat, gamma, beta, running_mean, running_var, eps)
    return y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
''', "counts only the N images"),
    Wrong("spatial_bn_running", "normalizes with the batch's statistics at inference", '''
def spatial_update_running_stats(running_mean, running_var, x, momentum=0.1):
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    return update_running_stats(running_mean, running_var, flat.mean(axis=0), flat.var(axis=0), n * h * w, momentum)


def spatial_batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    n, c, h, w = x.shape
    y, _, _, _ = batchnorm_forward_train(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
''', "with the batch's own statistics"),
    # Answers that change the test's own arrays in place, so that an expected value computed afterwards from
    # those arrays would agree with them (the tests compute theirs first, and call() passes copies).
    Wrong("bn_forward_train", "zeroes x, gamma and beta in place and returns zeros", '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-5):
    for a in (x, gamma, beta):
        a[...] = 0.0
    return np.zeros_like(x), np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros_like(x)
''', "mu for a batch of 8"),
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
    Right("bn_compact", "uses means over the batch and divides by the standard deviation once", '''
def bn_backward_compact(dxhat, x_hat, var, eps):
    return (dxhat - dxhat.mean(axis=0) - x_hat * (dxhat * x_hat).mean(axis=0)) / np.sqrt(var + eps)
'''),
    Right("spatial_bn_running", "moves the channel axis with np.moveaxis and computes the statistics itself", '''
def spatial_update_running_stats(running_mean, running_var, x, momentum=0.1):
    values = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    count = values.shape[0]
    mean, var = values.mean(axis=0), values.var(axis=0) * count / (count - 1)
    return (1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * var


def spatial_batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    shape = (1, -1, 1, 1)
    scale = gamma.reshape(shape) / np.sqrt(running_var.reshape(shape) + eps)
    return (x - running_mean.reshape(shape)) * scale + beta.reshape(shape)
'''),
]

# Answer keys: the course's own code in an answer cell (issue 17). The rule's message names the line.
COURSE_RULE = "may not call, subclass, import, exec or read the source of the course's own package"
TORCH_RULE = "may not use torch"
WRONG += [
    Wrong(
        "bn_forward_train",
        "takes the graders' reference through the package's loader",
        '''
from goingdeeper.grading import load_reference

batchnorm_forward_train = load_reference("batchnorm").batchnorm_forward_train
''',
        COURSE_RULE,
    ),
    Wrong(
        "bn_dx",
        "lets torch's autograd do the backward pass",
        '''
def bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):
    xt = torch.tensor(x, requires_grad=True)
    m = xt.mean(0)
    v = ((xt - m) ** 2).mean(0)
    ((xt - m) / torch.sqrt(v + eps)).backward(torch.tensor(dxhat))
    return xt.grad.numpy()
''',
        TORCH_RULE,
    ),
]
