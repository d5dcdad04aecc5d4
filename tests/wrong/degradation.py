"""Wrong implementations for notebook 05 (training ResNets on CIFAR-10)."""

import inspect

from goingdeeper.grading import load_reference

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

# Exercise 7: the whole loop. Each wrong version is the right one with one decision changed.
# The right loop is the graders' reference (autograder/reference/degradation.py), as its source text.
_LOOP = "\n" + inspect.getsource(load_reference("degradation").train_loop)


def _loop(old: str, new: str) -> str:
    assert _LOOP.count(old) == 1, old
    return _LOOP.replace(old, new)


WRONG += [
    Wrong("train_loop", "one permutation for the whole run",
          _loop("    for epoch in range(1, epochs + 1):\n        model.train()\n"
                "        order = torch.randperm(n, generator=generator)\n",
                "    order = torch.randperm(n, generator=generator)\n"
                "    for epoch in range(1, epochs + 1):\n        model.train()\n"), "the same order"),
    Wrong("train_loop", "never shuffles", _loop("        order = torch.randperm(n, generator=generator)\n",
                                                "        order = torch.arange(n)\n"), "stored order"),
    Wrong("train_loop", "draws the permutation from torch's global generator",
          _loop("        order = torch.randperm(n, generator=generator)\n", "        order = torch.randperm(n)\n"),
          "generators seeded alike"),
    Wrong("train_loop", "drops the last, smaller batch",
          _loop("range(0, n, batch_size)", "range(0, n - batch_size + 1, batch_size)"), "left over"),
    Wrong("train_loop", "normalizes before augmenting",
          _loop("cifar.normalize(augment(data.train_x[idx], generator))",
                "augment(cifar.normalize(data.train_x[idx]), generator)"), "give it the uint8 batch"),
    Wrong("train_loop", "counts iterations from 0 again in every epoch",
          _loop("            lr = lr_at(iteration, total, base_lr)", "            lr = lr_at(start // batch_size, total, base_lr)"),
          "start again each epoch"),
    Wrong("train_loop", "sets the rate after the step (each step runs at the previous one's rate)",
          _loop('''            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, n_wrong = train_step(model, optimizer, x, data.train_y[idx])
''', '''            loss, n_wrong = train_step(model, optimizer, x, data.train_y[idx])
            for group in optimizer.param_groups:
                group["lr"] = lr
'''), "before train_step"),
    Wrong("train_loop", "the training error as the mean of the batches' rates",
          _loop('''            wrong += n_wrong
''', '''            wrong += n_wrong / len(idx) / batches * n
'''), "not a mean of the batches' rates"),
]

# Graded by the in-process test only (tests/test_train.py runs the same checks as the test cells, visible and
# hidden): notebook 05 is the slowest to grade, and each wrong version beyond the eight of augment would add
# a submission to both graders' runs in CI.
WRONG_IN_PROCESS = [
    Wrong("train_loop", "augments without the generator",
          _loop("augment(data.train_x[idx], generator)", "augment(data.train_x[idx])"), "did not get the generator"),
    Wrong("train_loop", "tells lr_at the length of an epoch, not of the run",
          _loop("lr_at(iteration, total, base_lr)", "lr_at(iteration, batches, base_lr)"), "iterations:"),
    Wrong("train_loop", "sets the rate in the first parameter group only",
          _loop('''            for group in optimizer.param_groups:
                group["lr"] = lr
''', '''            optimizer.param_groups[0]["lr"] = lr
'''), "every group"),
    Wrong("train_loop", "never puts the model in training mode",
          _loop("        model.train()\n", ""), "model.train()"),
    Wrong("train_loop", "measures the error on the training images",
          _loop("evaluate(model, data.test_x, data.test_y)", "evaluate(model, data.train_x, data.train_y)"),
          "did not get the test set"),

]

# Exercise 8: depth_costs.
_COSTS = '''
def depth_costs(histories):
    final = {h.model: 100 * h.final["train_error"] for h in histories}
    costs = {}
    for kind, prefix in [("plain", "plain"), ("residual", "resnet")]:
        if prefix + "20" in final and prefix + "56" in final:
            costs[kind] = final[prefix + "56"] - final[prefix + "20"]
    return costs
'''
WRONG += [
    Wrong("depth_costs", "reads the test error", _COSTS.replace('h.final["train_error"]', 'h.final["test_error"]'),
          "training error"),
    Wrong("depth_costs", "in fractions, not percentage points", _COSTS.replace("100 * h.final", "h.final"),
          "percentage points"),
    Wrong("depth_costs", "the shallow network's error minus the deep one's",
          _COSTS.replace('final[prefix + "56"] - final[prefix + "20"]', 'final[prefix + "20"] - final[prefix + "56"]'),
          "wrong sign"),
    Wrong("depth_costs", "reads the first epoch's record",
          _COSTS.replace('h.final["train_error"]', 'h.records[0]["train_error"]'), "last epoch"),
    Wrong("depth_costs", "finds a run by a name that contains 'resnet20' (the pre-activation run too)", '''
def depth_costs(histories):
    final = {}
    for h in histories:
        for name in ["plain20", "plain56", "resnet20", "resnet56"]:
            if name in h.model:
                final[name] = 100 * h.final["train_error"]
    return {"plain": final["plain56"] - final["plain20"], "residual": final["resnet56"] - final["resnet20"]}
''', "named exactly"),
]
RIGHT += [
    Right("train_loop", "batches from split(), the rate set through a helper, records built at the end", '''
def _set_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group.update(lr=lr)


def train_loop(model, optimizer, data, epochs, batch_size, base_lr, generator, *, augment, train_step, lr_at,
               evaluate):
    total = epochs * len(torch.arange(len(data.train_y)).split(batch_size))
    step = 0
    losses, wrongs, tests, rates = [], [], [], []
    for epoch in range(epochs):
        model.train()
        epoch_losses, epoch_wrong = [], 0
        for idx in torch.randperm(len(data.train_y), generator=generator).split(batch_size):
            images = augment(data.train_x[idx], generator=generator)
            rate = lr_at(step, total, base_lr)
            _set_rate(optimizer, rate)
            loss, wrong = train_step(model, optimizer, cifar.normalize(images), data.train_y[idx])
            epoch_losses.append(float(loss))
            epoch_wrong += int(wrong)
            step += 1
        losses.append(sum(epoch_losses) / len(epoch_losses))
        wrongs.append(epoch_wrong / len(data.train_y))
        tests.append(evaluate(model, data.test_x, data.test_y))
        rates.append(rate)
    return [dict(epoch=e + 1, train_loss=losses[e], train_error=wrongs[e], test_error=tests[e], lr=rates[e])
            for e in range(epochs)]
'''),
    Right("depth_costs", "a loop over the histories, a lookup by exact name", '''
def depth_costs(histories):
    by_name = {}
    for history in histories:
        by_name[history.model] = history.final["train_error"] * 100
    out = {}
    if "plain20" in by_name and "plain56" in by_name:
        out["plain"] = by_name["plain56"] - by_name["plain20"]
    if "resnet20" in by_name and "resnet56" in by_name:
        out["residual"] = by_name["resnet56"] - by_name["resnet20"]
    return out
'''),
]
