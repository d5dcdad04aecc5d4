"""Wrong implementations for notebook 02 (vector backprop, fully connected layers, vanishing gradients)."""

from . import Right, Wrong

LINEAR_FORWARD = '''
def linear_forward(a_prev, W, b):
    return a_prev @ W.T + b
'''

ACTIVATIONS_OK = {
    "relu": '''
def relu_forward(z):
    return np.maximum(z, 0.0)


def relu_backward(da, z):
    return da * (z > 0)
''',
    "sigmoid": '''
def sigmoid_forward(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(da, z):
    s = sigmoid_forward(z)
    return da * s * (1 - s)
''',
    "tanh": '''
def tanh_forward(z):
    return np.tanh(z)


def tanh_backward(da, z):
    return da * (1 - np.tanh(z) ** 2)
''',
}


def _activations(**replace: str) -> str:
    return "\n\n".join(replace.get(name, src).strip() for name, src in ACTIVATIONS_OK.items())


CENTRED_GRADIENT = '''
def numerical_gradient(f, x, h=1e-5):
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
'''

RELATIVE_ERROR = '''

def relative_error(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
'''

MLP_FORWARD = '''
def mlp_forward(x, params, activation):
    forward, _ = ACTIVATIONS[activation]
    a, cache = x, []
    for i, (W, b) in enumerate(params):
        z = linear_forward(a, W, b)
        cache.append((a, z))
        a = forward(z) if i < len(params) - 1 else z
    return a, cache
'''

NORM_SQ = '''
def norm_sq_grads(x, W):
    q = W @ x
    df_dq = {df_dq}
    return q, float(q @ q), df_dq, {df_dW}, {df_dx}
'''


def _norm_sq(df_dq="2 * q", df_dW="np.outer(df_dq, x)", df_dx="W.T @ df_dq") -> str:
    return NORM_SQ.replace("{df_dq}", df_dq).replace("{df_dW}", df_dW).replace("{df_dx}", df_dx)


SOFTMAX = '''
def softmax_cross_entropy(scores, y):
    {body}
'''

WRONG = [
    Wrong("vector_grads", "writes the weight gradient as x q^T (transposed)", _norm_sq(df_dW="np.outer(x, df_dq)"),
          "W_ij reaches f only through q_i"),
    Wrong("vector_grads", "forgets the factor 2 of the square", _norm_sq(df_dq="q"), "Only the term q_i^2"),
    Wrong("vector_grads", "multiplies by W instead of W^T for df/dx", _norm_sq(df_dx="W @ df_dq"),
          "the paths add"),
    Wrong("vector_grads", "hard-codes the lecture's numbers", '''
def norm_sq_grads(x, W):
    return (np.array([0.22, 0.26]), 0.116, np.array([0.44, 0.52]), np.array([[0.088, 0.176], [0.104, 0.208]]),
            np.array([-0.112, 0.636]))
''', "W of shape (3, 2)"),
    Wrong("grad_check", "uses the one-sided difference", '''
def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x, dtype=float)
    base = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f(x) - base) / h
        x[i] = old
    return grad
''' + RELATIVE_ERROR, "centred difference"),
    Wrong("grad_check", "leaves x nudged (never puts the entry back)", '''
def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x, dtype=float)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        grad[i] = (up - down) / (2 * h)
    return grad
''' + RELATIVE_ERROR, "changed x"),
    Wrong("grad_check", "ignores its h argument", '''
def numerical_gradient(f, x, h=1e-5):
    step = 1e-5
    grad = np.zeros_like(x, dtype=float)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + step
        up = f(x)
        x[i] = old - step
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * step)
    return grad
''' + RELATIVE_ERROR, "use the h you are given"),
    Wrong("grad_check", "relative error without the floor: 0 / 0", CENTRED_GRADIENT + '''

def relative_error(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.max(np.abs(a - b) / (np.abs(a) + np.abs(b))))
''', "floor 1e-8"),
    Wrong("linear_layer", "transposes dW", LINEAR_FORWARD + '''

def linear_backward(dz, a_prev, W):
    return dz @ W, a_prev.T @ dz, dz.sum(axis=0)
''', "looks transposed"),
    Wrong("linear_layer", "averages db over the batch", LINEAR_FORWARD + '''

def linear_backward(dz, a_prev, W):
    return dz @ W, dz.T @ a_prev, dz.mean(axis=0)
''', "averaged over the batch"),
    Wrong("activations", "takes ReLU'(0) = 1", _activations(relu='''
def relu_forward(z):
    return np.maximum(z, 0.0)


def relu_backward(da, z):
    return da * (z >= 0)
'''), "also at z = 0"),
    Wrong("activations", "writes tanh' as 1 - z^2", _activations(tanh='''
def tanh_forward(z):
    return np.tanh(z)


def tanh_backward(da, z):
    return da * (1 - z ** 2)
'''), "with tanh(z) itself, not with z"),
    Wrong("activations", "uses sigma(z) as its own derivative", _activations(sigmoid='''
def sigmoid_forward(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(da, z):
    return da * sigmoid_forward(z)
'''), "write the result with sigma(z) itself"),
    Wrong("activations", "the plain formula, which overflows for very negative inputs (and warns)", _activations(
        sigmoid='''
def sigmoid_forward(z):
    return 1 / (1 + np.exp(-z))


def sigmoid_backward(da, z):
    s = sigmoid_forward(z)
    return da * s * (1 - s)
'''), "RuntimeWarning: overflow"),
    Wrong("activations", "picks between two forms with np.where, computing the overflowing one too (exact, but warns)",
          _activations(sigmoid='''
def sigmoid_forward(z):
    return np.where(z >= 0, 1 / (1 + np.exp(-z)), np.exp(z) / (1 + np.exp(z)))


def sigmoid_backward(da, z):
    s = sigmoid_forward(z)
    return da * s * (1 - s)
'''), "RuntimeWarning: overflow"),
    Wrong("network", "forgets the activation derivative in the recursion", MLP_FORWARD + '''

def mlp_backward(dout, cache, params, activation):
    grads, deltas = [None] * len(params), [None] * len(params)
    delta = dout
    for k in range(len(params) - 1, -1, -1):
        a_prev, _ = cache[k]
        deltas[k] = delta
        da_prev, dW, db = linear_backward(delta, a_prev, params[k][0])
        grads[k] = (dW, db)
        delta = da_prev
    return grads, deltas
''', "the step from delta^"),
    Wrong("network", "applies the activation to the last layer too", '''
def mlp_forward(x, params, activation):
    forward, _ = ACTIVATIONS[activation]
    a, cache = x, []
    for W, b in params:
        z = linear_forward(a, W, b)
        cache.append((a, z))
        a = forward(z)
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
''', "the last layer has no activation"),
    Wrong("network", "stops the backward loop before the first layer", MLP_FORWARD + '''

def mlp_backward(dout, cache, params, activation):
    _, backward = ACTIVATIONS[activation]
    grads, deltas = [], []
    delta = dout
    for k in range(len(params) - 1, 0, -1):
        a_prev, _ = cache[k]
        deltas.insert(0, delta)
        da_prev, dW, db = linear_backward(delta, a_prev, params[k][0])
        grads.insert(0, (dW, db))
        delta = backward(da_prev, cache[k - 1][1])
    return grads, deltas
''', "did the loop skip a layer"),
    Wrong("init_weights", "He with sqrt(1 / d_in)", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(1.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    return rng.normal(0.0, stds[scheme], size=(d_out, d_in))
''', "He: sqrt(2 / d_in)"),
    Wrong("init_weights", "returns the matrix as (d_in, d_out)", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(2.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    return rng.normal(0.0, stds[scheme], size=(d_in, d_out))
''', "not (d_out, d_in)"),
    Wrong("init_weights", "draws from numpy's global generator instead of rng", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(2.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    return np.random.normal(0.0, stds[scheme], size=(d_out, d_in))
''', "draw from the rng you are given"),
    Wrong("init_weights", "draws from a uniform distribution with the right standard deviation", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(2.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    limit = stds[scheme] * np.sqrt(3.0)
    return rng.uniform(-limit, limit, size=(d_out, d_in))
''', "not a uniform one"),
    Wrong("fit_lambda", "returns the norm at layer 1 as C", '''
def fit_lambda(norms):
    norms = np.asarray(norms, dtype=float)
    L = len(norms)
    k = np.arange(1, L + 1)
    slope, intercept = np.polyfit(L - k, np.log(norms), 1)
    return float(norms[0]), float(np.exp(slope))
''', "the norm at layer 1"),
    Wrong("softmax_loss", "exponentiates the raw scores (overflows, and warns)", SOFTMAX.replace("{body}", '''p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    n = len(y)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return float(-np.log(p[np.arange(n), y]).mean()), d / n'''), "RuntimeWarning"),
    Wrong("softmax_loss", "forgets to divide the gradient by the batch size", SOFTMAX.replace("{body}", '''shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    return float(-log_p[np.arange(n), y].mean()), d'''), "summed over the batch where it should be averaged"),
    Wrong("softmax_loss", "gives the gradient the wrong sign (one-hot minus probabilities)", SOFTMAX.replace(
        "{body}", '''shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    d = -np.exp(log_p)
    d[np.arange(n), y] += 1
    return float(-log_p[np.arange(n), y].mean()), d / n'''), "wrong sign"),
    Wrong("fit_lambda", "counts the exponent from the input (k - 1) instead of from the output (L - k)", '''
def fit_lambda(norms):
    norms = np.asarray(norms, dtype=float)
    k = np.arange(1, len(norms) + 1)
    slope, intercept = np.polyfit(k - 1, np.log(norms), 1)
    return float(np.exp(intercept)), float(np.exp(slope))
''', "counted from the OUTPUT layer"),
    Wrong("grad_check", "relative_error zeroes both arrays in place and returns 0", CENTRED_GRADIENT + '''

def relative_error(a, b):
    for v in (a, b):
        if isinstance(v, np.ndarray):
            v[...] = 0.0
    return 0.0
''', "relative_error"),
]


RIGHT = [
    Right("init_weights", "draws with standard_normal(size=..., dtype=np.float64) and scales", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(2.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    return stds[scheme] * rng.standard_normal(size=(d_out, d_in), dtype=np.float64)
'''),
    Right("init_weights", "fills a preallocated array in place with standard_normal(out=W)", '''
def init_weights(d_in, d_out, scheme, rng):
    stds = {"small": 0.01, "xavier": np.sqrt(2.0 / (d_in + d_out)), "he": np.sqrt(2.0 / d_in), "large": 1.0}
    if scheme not in stds:
        raise ValueError(scheme)
    W = np.empty((d_out, d_in))
    rng.standard_normal(out=W)
    W *= stds[scheme]
    return W
'''),
    Right("vector_grads", "returns a namedtuple", '''
import collections

Grads = collections.namedtuple("Grads", "q f df_dq df_dW df_dx")


def norm_sq_grads(x, W):
    q = W @ x
    return Grads(q, float(q @ q), 2 * q, np.outer(2 * q, x), W.T @ (2 * q))
'''),
    Right("grad_check", "restores x by adding and subtracting h (exact to within rounding)", '''
def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x, dtype=float)
    for i in np.ndindex(x.shape):
        x[i] += h
        up = f(x)
        x[i] -= 2 * h
        down = f(x)
        x[i] += h
        grad[i] = (up - down) / (2 * h)
    return grad
''' + RELATIVE_ERROR),
]

# Answer keys: the course's own code in an answer cell (issue 17). The rule's message names the line.
COURSE_RULE = "may not call, subclass, import, exec or read the source of the course's own package"
TORCH_RULE = "may not use torch"
WRONG += [
    Wrong(
        "fit_lambda",
        "takes the graders' reference through the package's loader",
        '''
from goingdeeper.grading import load_reference


def fit_lambda(norms):
    return load_reference("fully_connected").fit_lambda(norms)
''',
        COURSE_RULE,
    ),
    Wrong(
        "linear_layer",
        "lets torch's autograd compute the layer's gradients",
        '''
def linear_forward(a_prev, W, b):
    return a_prev @ W.T + b


def linear_backward(dz, a_prev, W):
    a = torch.tensor(a_prev, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    b = torch.zeros(W.shape[0], dtype=Wt.dtype, requires_grad=True)
    (a @ Wt.T + b).backward(torch.tensor(dz))
    return a.grad.numpy(), Wt.grad.numpy(), b.grad.numpy()
''',
        TORCH_RULE,
    ),
]

# Given a misleading hint before issue 17: now the message names the mistake.
WRONG += [
    Wrong("fit_lambda", "returns (lam, C) instead of (C, lam)", '''
def fit_lambda(norms):
    norms = np.asarray(norms, dtype=float)
    L = len(norms)
    k = np.arange(1, L + 1)
    slope, intercept = np.polyfit(L - k, np.log(norms), 1)
    return float(np.exp(slope)), float(np.exp(intercept))
''', "order (C, lam)"),
    Wrong("fit_lambda", "swaps the axes of the fit (the exponent against the log-norms)", '''
def fit_lambda(norms):
    norms = np.asarray(norms, dtype=float)
    L = len(norms)
    k = np.arange(1, L + 1)
    slope, intercept = np.polyfit(np.log(norms), L - k, 1)
    return float(np.exp(intercept)), float(np.exp(slope))
''', "axes swapped"),
]
