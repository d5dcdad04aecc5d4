"""Wrong implementations for notebook 01 (computational graphs and scalar backprop)."""

from . import Right, Wrong

WRONG = [
    Wrong(
        "sin_graph",
        "evaluates the derivative of sin at x instead of at z",
        '''
def sin_graph(x, y):
    z = x + y
    L = math.sin(z)
    dL_dz = math.cos(x)
    return z, L, dL_dz, dL_dz, dL_dz
''',
        "evaluated at its own input z",
    ),
    Wrong(
        "sin_graph",
        "uses -cos for the derivative of sin",
        '''
def sin_graph(x, y):
    z = x + y
    L = math.sin(z)
    dL_dz = -math.cos(z)
    return z, L, dL_dz, dL_dz, dL_dz
''',
        "the wrong sign",
    ),
    Wrong(
        "lecture_forward",
        "forgets the parentheses: x + y * z",
        '''
def lecture_forward(x, y, z):
    q = x + y
    return q, x + y * z
''',
        "the addition happens first",
    ),
    Wrong(
        "lecture_forward",
        "returns the lecture's numbers, right only at the lecture's point",
        '''
def lecture_forward(x, y, z):
    return 3.0, -12.0
''',
        "q is the addition node's output",
    ),
    Wrong(
        "lecture_local_grads",
        "gives each input of the product its own value instead of the other one's",
        '''
def lecture_local_grads(x, y, z):
    q = x + y
    return q, z, 1.0, 1.0
''',
        "Raise q by a small h",
    ),
    Wrong(
        "lecture_local_grads",
        "returns the lecture's numbers, right only at the lecture's point",
        '''
def lecture_local_grads(x, y, z):
    return -4.0, 3.0, 1.0, 1.0
''',
        "Raise q by a small h",
    ),
    Wrong(
        "lecture_local_grads",
        "takes the addition's local gradients to be its inputs",
        '''
def lecture_local_grads(x, y, z):
    return z, x + y, y, x
''',
        "how much does q = x + y change",
    ),
    Wrong(
        "lecture_chain",
        "adds the local gradients along the path instead of multiplying them",
        '''
def lecture_backprop(x, y, z):
    _, f = lecture_forward(x, y, z)
    df_dq, df_dz, dq_dx, dq_dy = lecture_local_grads(x, y, z)
    return f, df_dq + dq_dx, df_dq + dq_dy, df_dz
''',
        "multiply the local gradients along the path",
    ),
    Wrong(
        "lecture_chain",
        "returns df/dz = z (copies the pattern of df/dx)",
        '''
def lecture_backprop(x, y, z):
    q = x + y
    return q * z, z, z, z
''',
        "z reaches f directly",
    ),
    Wrong(
        "engine_add_mul",
        "gives each factor of a product its own value as local gradient",
        '''
def add(a, b):
    return Value(a.data + b.data, parents=(a, b), local_grads=(1.0, 1.0), op="+")


def mul(a, b):
    return Value(a.data * b.data, parents=(a, b), local_grads=(a.data, b.data), op="*")
''',
        "OTHER input's value",
    ),
    Wrong(
        "engine_add_mul",
        "records op=\"+\" for a product too (copied from add)",
        '''
def add(a, b):
    return Value(a.data + b.data, parents=(a, b), local_grads=(1.0, 1.0), op="+")


def mul(a, b):
    return Value(a.data * b.data, parents=(a, b), local_grads=(b.data, a.data), op="+")
''',
        "should record op='*'",
    ),
    Wrong(
        "engine_add_mul",
        "records the parents' numbers instead of the parent nodes",
        '''
def add(a, b):
    return Value(a.data + b.data, parents=(Value(a.data), Value(b.data)), local_grads=(1.0, 1.0), op="+")


def mul(a, b):
    return Value(a.data * b.data, parents=(a, b), local_grads=(b.data, a.data), op="*")
''',
        "not the input node itself",
    ),
    Wrong(
        "engine_sin_relu",
        "takes ReLU'(0) = 1 (a >= 0)",
        '''
def sin(a):
    return Value(math.sin(a.data), parents=(a,), local_grads=(math.cos(a.data),), op="sin")


def relu(a):
    return Value(max(a.data, 0.0), parents=(a,), local_grads=(1.0 if a.data >= 0 else 0.0,), op="relu")
''',
        "0 at exactly 0",
    ),
    Wrong(
        "engine_sin_relu",
        "gives ReLU a local gradient of 1 everywhere",
        '''
def sin(a):
    return Value(math.sin(a.data), parents=(a,), local_grads=(math.cos(a.data),), op="sin")


def relu(a):
    return Value(max(a.data, 0.0), parents=(a,), local_grads=(1.0,), op="relu")
''',
        "ReLU's local gradient is 1 where the input is > 0",
    ),
    Wrong(
        "engine_topological_order",
        "depth-first search without a visited set: a reused node appears twice",
        '''
def topological_order(root):
    order = []
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        stack.append((node, True))
        for parent in node.parents:
            stack.append((parent, False))
    return order
''',
        "more than once",
    ),
    Wrong(
        "engine_topological_order",
        "a recursive search, which fails on deep graphs",
        '''
def topological_order(root):
    order, visited = [], set()

    def visit(node):
        if id(node) in visited:
            return
        visited.add(id(node))
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order
''',
        "recursion limit",
    ),
    Wrong(
        "engine_backward",
        "assigns the gradient instead of adding it",
        '''
def backward(root):
    root.grad = 1.0
    for node in reversed(topological_order(root)):
        for parent, local in zip(node.parents, node.local_grads):
            parent.grad = local * node.grad
''',
        "both of its contributions must count",
    ),
    Wrong(
        "engine_backward",
        "walks the topological order forwards instead of in reverse",
        '''
def backward(root):
    root.grad = 1.0
    for node in topological_order(root):
        for parent, local in zip(node.parents, node.local_grads):
            parent.grad += local * node.grad
''',
        "in which order must backward visit the nodes",
    ),
    Wrong(
        "engine_backward",
        "breadth-first order from the root: right on trees, wrong when paths to a node differ in length",
        '''
def backward(root):
    root.grad = 1.0
    seen, queue = {id(root)}, [root]
    for node in queue:
        for parent, local in zip(node.parents, node.local_grads):
            parent.grad += local * node.grad
            if id(parent) not in seen:
                seen.add(id(parent))
                queue.append(parent)
''',
        "is wrong on f =",
    ),
]


RIGHT = [
    Right("sin_graph", "returns a namedtuple", '''
import collections

SinGraph = collections.namedtuple("SinGraph", "z L dL_dz dL_dx dL_dy")


def sin_graph(x, y):
    z = x + y
    return SinGraph(z, math.sin(z), math.cos(z), math.cos(z), math.cos(z))
'''),
    Right("lecture_forward", "keeps q as an exact fraction and f as a float subclass", '''
import fractions


class Exact(float):
    pass


def lecture_forward(x, y, z):
    q = fractions.Fraction(x) + fractions.Fraction(y)
    return q, Exact(q * fractions.Fraction(z))
'''),
    Right("lecture_chain", "computes everything inline, with numpy floats", '''
def lecture_backprop(x, y, z):
    x, y, z = np.float64(x), np.float64(y), np.float64(z)
    q = x + y
    return q * z, z * 1.0, 1.0 * z, q
'''),
]

# Answer keys: the course's own code in an answer cell (issue 17). The rule's message names the line.
COURSE_RULE = "may not call, subclass, import, exec or read the source of the course's own package"
TORCH_RULE = "may not use torch"
WRONG += [
    Wrong(
        "sin_graph",
        "runs the package's torch oracle on the graph",
        '''
def sin_graph(x, y):
    p = scalar.Program((scalar.Step("input", value=0), scalar.Step("input", value=1), scalar.Step("add", (0, 1)),
                        scalar.Step("sin", (2,))), 2)
    L, (dL_dx, dL_dy) = scalar.run_torch(p, [x, y])
    return x + y, L, dL_dx, dL_dx, dL_dy
''',
        COURSE_RULE,
    ),
    Wrong(
        "lecture_local_grads",
        "lets torch's autograd do the derivation",
        '''
def lecture_local_grads(x, y, z):
    import torch

    xt, yt, zt = (torch.tensor(float(v), requires_grad=True) for v in (x, y, z))
    q = xt + yt
    q.retain_grad()
    (q * zt).backward()
    return float(zt), float(q), 1.0, 1.0
''',
        TORCH_RULE,
    ),
    Wrong(
        "engine_topological_order",
        "copies the course's source into the notebook and runs it",
        '''
import inspect

exec(inspect.getsource(scalar.collect_nodes))


def topological_order(root):
    return list(reversed(collect_nodes(root)))
''',
        COURSE_RULE,
    ),
]

# Told about the order before issue 17: now the message names the mistake.
WRONG += [
    Wrong(
        "engine_backward",
        "adds the local gradients without the upstream gradient",
        '''
def backward(root):
    root.grad = 1.0
    for node in reversed(topological_order(root)):
        for parent, local in zip(node.parents, node.local_grads):
            parent.grad += local
''',
        "the local gradient alone",
    ),
    Wrong(
        "engine_backward",
        "pulls from the parents instead of pushing to them",
        '''
def backward(root):
    root.grad = 1.0
    for node in reversed(topological_order(root)):
        for parent, local in zip(node.parents, node.local_grads):
            node.grad += local * parent.grad
''',
        "No gradient reached this node",
    ),
]
