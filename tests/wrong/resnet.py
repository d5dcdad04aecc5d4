"""Wrong implementations for notebook 04 (residual networks)."""

from . import Right, Wrong

CONV_OUTPUT = '''
def conv_output_size(n, k, stride=1, padding=0):
    return (n + 2 * padding - k) // stride + 1
'''

SHORTCUT_A = '''
class ShortcutA(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
'''

BASIC_INIT = '''
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride=1, option="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = option is not None
        if option is not None and (stride != 1 or in_channels != planes):
            if option == "A":
                self.shortcut = ShortcutA(in_channels, planes, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()
'''

BASIC_FORWARD = '''
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)
'''

BOTTLENECK = '''
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, stride_in_1x1=False):
        super().__init__()
        out = planes * self.expansion
        s1, s3 = ({s1})
        self.conv1 = nn.Conv2d(in_channels, {mid}, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d({mid})
        self.conv2 = nn.Conv2d({mid}, {mid}, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d({mid})
        self.conv3 = nn.Conv2d({mid}, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        if {project}:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))
'''


def _bottleneck(s1="(stride, 1) if stride_in_1x1 else (1, stride)", mid="planes",
                project="stride != 1 or in_channels != out") -> str:
    return BOTTLENECK.replace("({s1})", s1).replace("{mid}", mid).replace("{project}", project)


PREACT = '''
class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        if stride != 1 or in_channels != planes:
            self.shortcut = ShortcutA(in_channels, planes, stride)
        else:
            self.shortcut = nn.Identity()
'''

RESNET = '''
class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, width=64, **block_kwargs):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(channels, planes, {stride}, **block_kwargs))
                channels = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = {stem}
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_resnet(depth, num_classes=1000, width=64, **block_kwargs):
    block, layers = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
                     101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}[depth]
    return ResNet(block, layers, num_classes=num_classes, width=width, **block_kwargs)
'''


def _resnet(stride="2 if i > 0 and j == 0 else 1", stem="self.maxpool(self.relu(self.bn1(self.conv1(x))))") -> str:
    return RESNET.replace("{stride}", stride).replace("{stem}", stem)


CIFAR = '''
class CifarResNet(nn.Module):
    def __init__(self, depth, residual=True):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        channels = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, planes, 2 if i > 0 and j == 0 else 1, {option}))
                channels = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth, residual=True):
    return CifarResNet(depth, residual)
'''

GRADS = '''
def block_input_grad_norms(model, blocks, x, y):
    inputs = []
    handles = [blk.{hook}(lambda module, *args: inputs.append(args[{which}])) for blk in blocks]
    loss = F.cross_entropy(model(x), y{reduction})
    {remove}
    grads = torch.autograd.grad(loss, inputs)
    return [float(g.norm()) for g in grads]{order}
'''


def _grads(hook="register_forward_pre_hook", which="0][0", reduction="", remove="for h in handles: h.remove()",
           order="") -> str:
    return (GRADS.replace("{hook}", hook).replace("{which}", which).replace("{reduction}", reduction)
            .replace("{remove}", remove).replace("{order}", order))


WRONG = [
    Wrong("residual_blanks", "subtracts the wrong way round: F = x - H(x)", '''
def residual_target(H_x, x):
    return x - H_x


def residual_output(F_x, x):
    return F_x + x
''', "residual_target is wrong"),
    Wrong("residual_blanks", "forgets to add the input back", '''
def residual_target(H_x, x):
    return H_x - x


def residual_output(F_x, x):
    return F_x
''', "residual_output"),
    Wrong("residual_wrapper", "returns the branch's output without the input", '''
class Residual(nn.Module):
    def __init__(self, branch):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return self.branch(x)
''', "branch(x) + x"),
    Wrong("residual_wrapper", "keeps the branch in a plain list, so its parameters are not registered", '''
class Residual(nn.Module):
    def __init__(self, branch):
        super().__init__()
        self.parts = [branch]

    def forward(self, x):
        return self.parts[0](x) + x
''', "should have the Linear's 30"),
    Wrong("conv_cost", "ignores the padding", '''
def conv_output_size(n, k, stride=1, padding=0):
    return (n - k) // stride + 1


def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):
    return conv_output_size(h, k, stride, padding) * conv_output_size(w, k, stride, padding) * c_out * k * k * c_in


def conv_weights(c_in, c_out, k):
    return k * k * c_in * c_out
''', "Count the positions"),
    Wrong("conv_cost", "leaves the input channels out of the multiplications", CONV_OUTPUT + '''

def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):
    return conv_output_size(h, k, stride, padding) * conv_output_size(w, k, stride, padding) * c_out * k * k


def conv_weights(c_in, c_out, k):
    return k * k * c_in * c_out
''', "k x k x c_in patch"),
    Wrong("lecture_1x1", "divides the wrong way round for the speed-up", '''
direct = conv_multiplies(28, 28, 192, 32, 5, 1, 2)
reduce = conv_multiplies(28, 28, 192, 16, 1)
expand = conv_multiplies(28, 28, 16, 32, 5, 1, 2)
total = reduce + expand
speedup = total / direct
weights_direct = conv_weights(192, 32, 5)
weights_bottleneck = conv_weights(192, 16, 1) + conv_weights(16, 32, 5)
''', "direct / total"),
    Wrong("shortcut_a", "puts the zero channels before the input's", '''
class ShortcutA(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.out_channels - self.in_channels, 0))
''', "zero channels come first"),
    Wrong("shortcut_a", "does not subsample", '''
class ShortcutA(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
''', "should be (2, 8, 3, 4)"),
    Wrong("basic_block", "applies ReLU before the addition", BASIC_INIT + '''
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)
''', "before the addition"),
    Wrong("basic_block", "gives the projection no stride", BASIC_INIT.replace(
        "nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)", "nn.Conv2d(in_channels, planes, 1, bias=False)")
        + BASIC_FORWARD, "do not have the same shape at the addition"),
    Wrong("basic_block", "puts a projection on every block", BASIC_INIT.replace(
        "if option is not None and (stride != 1 or in_channels != planes):", "if option is not None:")
        + BASIC_FORWARD, "only where the shape changes"),
    Wrong("basic_block", "uses a projection for option A", BASIC_INIT.replace(
        'if option == "A":', 'if option == "never":') + BASIC_FORWARD, "Option A's shortcut has no parameters"),
    Wrong("bottleneck", "expands to 4 * planes already in the first 1x1", _bottleneck(mid="out"), "Expand only at the end"),
    Wrong("bottleneck", "always strides the 3x3, whatever stride_in_1x1 says", _bottleneck(s1="(1, stride)"),
          "the stride sits on the wrong convolution"),
    Wrong("bottleneck", "projects on every block", _bottleneck(project="True"), "only where the shape changes"),
    Wrong("preact_block", "keeps a ReLU after the addition", PREACT + '''
    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return F.relu(out + self.shortcut(x))
''', "nothing after it"),
    Wrong("preact_block", "keeps the post-activation order conv-BN-ReLU", PREACT + '''
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return out + self.shortcut(x)
''', "post-activation order conv-BN-ReLU"),
    Wrong("imagenet_family", "forgets the max pool of the stem", _resnet(stem="self.relu(self.bn1(self.conv1(x)))"),
          "stride of each stage's first block"),
    Wrong("imagenet_family", "downsamples in the first stage too", _resnet(stride="2 if j == 0 else 1"),
          "strides only from layer2 on"),
    Wrong("cifar_family", "uses projections (option B) instead of option A", CIFAR.replace(
        "{option}", '"B" if residual else None'), "use option A shortcuts"),
    Wrong("cifar_family", "keeps the shortcuts in the plain twin", CIFAR.replace("{option}", '"A"'),
          "the plain twin has no shortcuts"),
    Wrong("block_grad_norms", "takes each block's output instead of its input", _grads(
        hook="register_forward_hook", which="1"), "shifted by one block"),
    Wrong("block_grad_norms", "sums the loss over the batch", _grads(reduction=', reduction="sum"'),
          "times too large"),
    Wrong("block_grad_norms", "never removes its hooks", _grads(remove="pass"), "left"),
]

RIGHT = [
    Right("basic_block", "an empty nn.Sequential() as the identity shortcut", BASIC_INIT.replace(
        "self.shortcut = nn.Identity()", "self.shortcut = nn.Sequential()") + BASIC_FORWARD),
    Right("block_grad_norms", "retain_grad on the blocks' inputs and loss.backward()", '''
def block_input_grad_norms(model, blocks, x, y):
    kept = []

    def keep(module, args):
        args[0].retain_grad()
        kept.append(args[0])

    handles = [b.register_forward_pre_hook(keep) for b in blocks]
    try:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    return [t.grad.norm().item() for t in kept]
'''),
]

# Answer keys: the course's own code in an answer cell (issue 17). The rule's message names the line.
COURSE_RULE = "may not call, subclass, import, exec or read the source of the course's own package"
WRONG += [
    Wrong(
        "preact_block",
        "subclasses the course's block",
        '''
class PreActBlock(models.PreActBlock):
    """The course's block."""
''',
        COURSE_RULE,
    ),
    Wrong(
        "conv_cost",
        "counts the weights with the package's helper",
        '''
def conv_output_size(n, k, stride=1, padding=0):
    return (n + 2 * padding - k) // stride + 1


def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):
    return conv_output_size(h, k, stride, padding) * conv_output_size(w, k, stride, padding) * conv_weights(c_in, c_out, k)


def conv_weights(c_in, c_out, k):
    return resnet.count_parameters(nn.Conv2d(c_in, c_out, k, bias=False))
''',
        COURSE_RULE,
    ),
]

# Accepted before issue 17: now loses its points with a message that names it.
WRONG += [
    Wrong("block_grad_norms", "leaves a hook registered on the network (it reads the logits through it)", '''
def block_input_grad_norms(model, blocks, x, y):
    inputs, logits = [], []
    handles = [blk.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for blk in blocks]
    model.register_forward_hook(lambda module, args, out: logits.append(out))
    model(x)
    for h in handles:
        h.remove()
    loss = F.cross_entropy(logits[-1], y)
    return [float(g.norm()) for g in torch.autograd.grad(loss, inputs)]
''', "hook(s) registered on the network"),
]
WRONG += [
    Wrong("conv_cost", "rounds the number of positions up", '''
import math


def conv_output_size(n, k, stride=1, padding=0):
    return math.ceil((n + 2 * padding - k) / stride) + 1


def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):
    return conv_output_size(h, k, stride, padding) * conv_output_size(w, k, stride, padding) * c_out * k * k * c_in


def conv_weights(c_in, c_out, k):
    return k * k * c_in * c_out
''', "rounding up"),
]
WRONG += [
    Wrong("basic_block", "leaves out the ReLU after the addition", BASIC_INIT + '''
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return out
''', "no ReLU after the addition"),
    Wrong("basic_block", "applies ReLU before BN after the first convolution", BASIC_INIT + '''
    def forward(self, x):
        out = self.bn1(F.relu(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)
''', "ReLU before BN"),
]

# Shattered gradients (issue 18): the usual mistakes in measuring the correlation of gradients at nearby inputs.
_CORRELATION = '''
def gradient_correlation(model, x, x_near, y):
    grads = []
    for inputs in (x, x_near):
        inputs = inputs.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(inputs), y, reduction="sum")
        grads.append(torch.autograd.grad(loss, inputs)[0].flatten(1))
    return float(F.cosine_similarity(grads[0], grads[1], dim=1).mean())
'''
WRONG += [
    Wrong("gradient_correlation", "takes one cosine over the whole batch",
          _CORRELATION.replace("F.cosine_similarity(grads[0], grads[1], dim=1).mean()",
                               "F.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)"),
          "One cosine over the whole batch mixes the images"),
    Wrong("gradient_correlation", "compares x's gradient with itself", _CORRELATION.replace(
        "for inputs in (x, x_near):", "for inputs in (x, x):"), "as if it compared x's gradient with itself"),
    Wrong("gradient_correlation", "sends both batches through one forward pass", '''
def gradient_correlation(model, x, x_near, y):
    both = torch.cat([x, x_near]).detach().requires_grad_(True)
    loss = F.cross_entropy(model(both), torch.cat([y, y]), reduction="sum")
    g = torch.autograd.grad(loss, both)[0].flatten(1)
    return float(F.cosine_similarity(g[:len(x)], g[len(x):], dim=1).mean())
''', "normalizes them together"),
    Wrong("gradient_correlation", "averages the absolute cosines", _CORRELATION.replace(
        "dim=1).mean()", "dim=1).abs().mean()"), "dropped the cosine's sign"),
]
RIGHT += [
    Right("gradient_correlation", "the mean loss and loss.backward() on inputs that require grad", '''
def gradient_correlation(model, x, x_near, y):
    a = x.detach().clone().requires_grad_(True)
    F.cross_entropy(model(a), y).backward()
    b = x_near.detach().clone().requires_grad_(True)
    F.cross_entropy(model(b), y).backward()
    cosines = F.cosine_similarity(a.grad.reshape(len(x), -1), b.grad.reshape(len(x), -1), dim=1)
    return cosines.mean().item()
'''),
]
