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

WRONG = [
    Wrong("vector_lecture", "writes the weight gradient as x q^T (transposed)", '''
x = np.array([0.2, 0.4])
W = np.array([[0.1, 0.5], [-0.3, 0.8]])
q = W @ x
f = float(q @ q)
df_dq = 2 * q
df_dW = np.outer(x, df_dq)
df_dx = W.T @ df_dq
''', "transpose"),
    Wrong("vector_lecture", "forgets the factor 2 of the square", '''
x = np.array([0.2, 0.4])
W = np.array([[0.1, 0.5], [-0.3, 0.8]])
q = W @ x
f = float(q @ q)
df_dq = q
df_dW = np.outer(df_dq, x)
df_dx = W.T @ df_dq
''', "df/dq_i = 2 q_i"),
    Wrong("vector_backprop", "multiplies by W instead of W^T for df/dx", '''
def norm_sq_backprop(x, W):
    q = W @ x
    return float(q @ q), np.outer(2 * q, x), W @ (2 * q)
''', "df/dx = W^T (2 q)"),
    Wrong("vector_backprop", "transposes the weight gradient", '''
def norm_sq_backprop(x, W):
    q = W @ x
    return float(q @ q), np.outer(x, 2 * q), W.T @ (2 * q)
''', "transpose"),
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
'''), "square tanh(z), not z"),
    Wrong("activations", "a sigmoid that overflows for very negative inputs", _activations(sigmoid='''
def sigmoid_forward(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z)) if np.all(z > -700) else np.full_like(z, np.nan)


def sigmoid_backward(da, z):
    s = sigmoid_forward(z)
    return da * s * (1 - s)
'''), "nan or inf"),
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
    Right("vector_backprop", "returns a namedtuple", '''
import collections

Grads = collections.namedtuple("Grads", "f df_dW df_dx")


def norm_sq_backprop(x, W):
    q = W @ x
    return Grads(float(q @ q), np.outer(2 * q, x), W.T @ (2 * q))
'''),
]
