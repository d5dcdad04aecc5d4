"""Wrong implementations for notebook 05 (training ResNets on CIFAR-10)."""

from . import Right, Wrong


def _looped_augment(padded: str = "F.pad(x, (pad, pad, pad, pad))", out: str = "torch.empty_like(x)",
                    flip_dim: str = "-1") -> str:
    """An augment that loops over the images, right but for the line each wrong version below changes."""
    return f'''
def augment(x, generator=None, pad=4):
    n, c, h, w = x.shape
    padded = {padded}
    out = {out}
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip({flip_dim}) if flips[i] else crop
    return out
'''


WRONG = [
    Wrong("channel_stats", "forgets to divide by 255", '''
def channel_stats(x):
    v = x.to(torch.float64)
    return tuple(v.mean(dim=(0, 2, 3)).tolist()), tuple(v.std(dim=(0, 2, 3), correction=0).tolist())
''', "Divide by 255"),
    Wrong("channel_stats", "the sample standard deviation (n - 1)", '''
def channel_stats(x):
    v = x.to(torch.float64) / 255
    return tuple(v.mean(dim=(0, 2, 3)).tolist()), tuple(v.std(dim=(0, 2, 3)).tolist())
''', "divided by n - 1"),
    Wrong("channel_stats", "one standard deviation for all channels", '''
def channel_stats(x):
    v = x.to(torch.float64) / 255
    return tuple(v.mean(dim=(0, 2, 3)).tolist()), (float(v.std(correction=0)),) * x.shape[1]
''', "compute it per channel"),
    Wrong("channel_stats", "averages the per-image standard deviations", '''
def channel_stats(x):
    v = x.to(torch.float64) / 255
    return tuple(v.mean(dim=(0, 2, 3)).tolist()), tuple(v.std(dim=(2, 3), correction=0).mean(0).tolist())
''', "every image's own standard deviation"),
    Wrong("channel_stats", "squares in uint8 (they wrap around at 256)", '''
def channel_stats(x):
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.sum(dim=(0, 2, 3)).double() / n
    mean_sq = (x * x).sum(dim=(0, 2, 3)).double() / n
    return tuple((mean / 255).tolist()), tuple(((mean_sq - mean ** 2).sqrt() / 255).tolist())
''', "wraps around at 256"),
    Wrong("augment", "draws one offset and one flip for the whole batch", '''
def augment(x, generator=None, pad=4):
    n, c, h, w = x.shape
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    padded = F.pad(x, (pad, pad, pad, pad))[:, :, dy:dy + h, dx:dx + w]
    return padded.flip(-1) if float(torch.rand(1, generator=generator)) < 0.5 else padded
''', "draw the offsets per image"),
    Wrong("augment", "ignores the generator it is given (torch's global one)", '''
def augment(x, generator=None, pad=4):
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if float(torch.rand(1)) < 0.5 else crop
    return out
''', "draw every random number from the generator you are given"),
    Wrong("augment", "pads by repeating the border instead of with zeros",
          _looped_augment(padded='F.pad(x.float(), (pad, pad, pad, pad), mode="replicate").to(torch.uint8)'),
          "padded with 4 zeros"),
    Wrong("augment", "flips upside down instead of left-right", _looped_augment(flip_dim="-2"),
          "flipped left-right or not"),
    Wrong("augment", "returns float images",
          _looped_augment(padded="F.pad(x, (pad, pad, pad, pad)).float()", out="torch.empty(x.shape)"),
          "keep the images uint8"),
    Wrong("train_step", "zeroes the gradients after the step", '''
def train_step(model, optimizer, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item(), int((logits.argmax(1) != y).sum())
''', "zero them before"),
    Wrong("train_step", "never zeroes the gradients", '''
def train_step(model, optimizer, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) != y).sum())
''', "They have piled up over two steps"),
    Wrong("train_step", "counts the correct images", '''
def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())
''', "largest logit is not at their label's position"),
    Wrong("train_step", "forgets the optimizer's step", '''
def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss.item(), int((logits.argmax(1) != y).sum())
''', "is not what one SGD step gives"),
    Wrong("evaluate", "stays in training mode", '''
def evaluate(model, x, y, batch_size=1000):
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(cifar.normalize(x[i:i + batch_size]))
            wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
    return wrong / len(x)
''', "call model.eval() first"),
    Wrong("evaluate", "forgets to normalize", '''
def evaluate(model, x, y, batch_size=1000):
    was_training = model.training
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size].float())
            wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
    model.train(was_training)
    return wrong / len(x)
''', "normalize each batch"),
    Wrong("evaluate", "leaves the model in inference mode", '''
def evaluate(model, x, y, batch_size=1000):
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(cifar.normalize(x[i:i + batch_size]))
            wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
    return wrong / len(x)
''', "leave the model in the mode it found it in"),
    Wrong("evaluate", "drops the last, smaller batch", '''
def evaluate(model, x, y, batch_size=1000):
    was_training = model.training
    model.eval()
    wrong, seen = 0, 0
    with torch.no_grad():
        for i in range(0, len(x) - batch_size + 1, batch_size):
            logits = model(cifar.normalize(x[i:i + batch_size]))
            wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
            seen += batch_size
    model.train(was_training)
    return wrong / max(seen, 1)
''', "the last, smaller batch"),
    Wrong("lr_at", "hard-codes the paper's 32k and 48k", '''
def lr_at(iteration, total, base_lr, warmup=False):
    if warmup:
        return base_lr / 10
    if iteration < 32000:
        return base_lr
    if iteration < 48000:
        return base_lr / 10
    return base_lr / 100
''', "half of 390"),
    Wrong("lr_at", "divides by 10 only once", '''
def lr_at(iteration, total, base_lr, warmup=False):
    if warmup:
        return base_lr / 10
    return base_lr if iteration < round(0.5 * total) else base_lr / 10
''', "and by 10 again"),
    Wrong("lr_at", "ignores the warm-up", '''
def lr_at(iteration, total, base_lr, warmup=False):
    if iteration < round(0.5 * total):
        return base_lr
    if iteration < round(0.75 * total):
        return base_lr / 10
    return base_lr / 100
''', "While warming up"),
    Wrong("grad_norms", "takes every parameter, biases and BN included", '''
def conv_grad_norms(model):
    return {name: float(p.grad.norm()) for name, p in model.named_parameters()}
''', "which are not convolution weights"),
    Wrong("grad_norms", "measures the weights instead of their gradients", '''
def conv_grad_norms(model):
    return {name: float(p.norm()) for name, p in model.named_parameters() if p.ndim == 4}
''', "not of the weight itself"),
    Wrong("grad_norms", "sorts the layers by their norm, largest first", '''
def conv_grad_norms(model):
    norms = {name: float(p.grad.norm()) for name, p in model.named_parameters() if p.ndim == 4}
    return dict(sorted(norms.items(), key=lambda item: -item[1]))
''', "in the model's order"),
]


RIGHT = [
    Right("channel_stats", "one pass in float32 over chunks of 1000 images, sums of squares in float64", '''
def channel_stats(x):
    sums, squares, count = 0.0, 0.0, 0
    for part in x.split(1000):
        v = part.float() / 255
        sums = sums + v.sum(dim=(0, 2, 3)).double()
        squares = squares + (v.double() ** 2).sum(dim=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = sums / count
    return mean.tolist(), (squares / count - mean ** 2).sqrt().tolist()
'''),
    Right("augment", "a loop over the possible offsets, each applied to the images that drew it", '''
def augment(x, generator=None, pad=4):
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            chosen = (dy == oy) & (dx == ox)
            if chosen.any():
                out[chosen] = padded[chosen, :, oy:oy + h, ox:ox + w]
    out[flip] = out[flip].flip(-1)
    return out
'''),
    Right("evaluate", "counts with torch.no_grad as a decorator and a list of predictions", '''
@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    mode = model.training
    model.eval()
    guesses = torch.cat([model(cifar.normalize(x[i:i + batch_size])).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(mode)
    return float((guesses != y).float().mean())
'''),
]

# Answer keys: the course's own code in an answer cell (issue 17). The rule's message names the line.
COURSE_RULE = "may not call, subclass, import, exec or read the source of the course's own package"
WRONG += [
    Wrong(
        "augment",
        "takes the graders' reference through the package's loader",
        '''
from goingdeeper.grading import load_reference

augment = load_reference("degradation").augment
''',
        COURSE_RULE,
    ),
    Wrong(
        "lr_at",
        "takes a schedule from the package",
        '''
def lr_at(iteration, total, base_lr, warmup=False):
    from goingdeeper.train import cosine_lr

    return cosine_lr(iteration, total, base_lr, warmup)
''',
        COURSE_RULE,
    ),
]

# Accepted before issue 17: each now loses its points with a message that names it.
_EVALUATE = '''
def evaluate(model, x, y, batch_size=1000):
    was_training = model.training
    model.eval()
    wrong = 0
    {grad}
        for i in range(0, len(x), batch_size):
            logits = model(cifar.normalize(x[i:i + batch_size]))
            wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
    {restore}
    return wrong / len(x)
'''
WRONG += [
    Wrong("augment", "draws the offsets from 0..2p-1 (randint's upper bound is exclusive)",
          _looped_augment().replace("torch.randint(0, 2 * pad + 1,", "torch.randint(0, 2 * pad,"),
          "the offsets run from 0 to 2 * pad"),
    Wrong("augment", "draws from a generator of its own, whatever it is given", '''
def augment(x, generator=None, pad=4):
    mine = torch.Generator().manual_seed(0)
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=mine)
    flips = torch.rand(n, generator=mine) < 0.5
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out
''', "different seeds"),
    Wrong("evaluate", "always ends in training mode, whatever the mode was",
          _EVALUATE.format(grad="with torch.no_grad():", restore="model.train()"), "not always training mode"),
    Wrong("evaluate", "restores model.training only, its BN layers stay in inference mode",
          _EVALUATE.format(grad="with torch.no_grad():", restore="model.training = was_training"),
          "sets only the model itself"),
    Wrong("evaluate", "keeps autograd on (no torch.no_grad())",
          _EVALUATE.format(grad="if True:", restore="model.train(was_training)"), "torch.no_grad()"),
    Wrong("grad_norms", "sorts the layers by name", '''
def conv_grad_norms(model):
    return dict(sorted((name, float(p.grad.norm())) for name, p in model.named_parameters() if p.ndim == 4))
''', "sorted by name"),
]
