"""An answer key made only of what the course installs: the grader must give it 0 and say why.

For every answer cell of every notebook, a replacement that calls, subclasses, imports or execs the
course's package instead of doing the work. Where the package has code that does the exercise (a torch
oracle, a training helper, a model), the key uses that, as a student who read the package would; every
other answer comes from the graders' references through ``goingdeeper.grading.load_reference``, which a
student with the course checkout can call. Without the own-work rule this key would earn full marks
(the references are right); with it, every test cell must score 0 with the rule's message, in both graders.
"""

from __future__ import annotations

import ast

import nbformat

from goingdeeper.scratch import answer_ids

TOPIC = {"01_computational_graphs": "computational_graphs", "02_fully_connected": "fully_connected",
         "03_batchnorm": "batchnorm", "04_resnet": "resnet", "05_degradation": "degradation"}

#: The package's own implementations, by answer: what a student who read goingdeeper/ could call.
PACKAGE = {
    "01_computational_graphs": {
        "sin_graph": "from goingdeeper import scalar\n\n\ndef sin_graph(x, y):\n    return scalar.sin_graph_torch(x, y)\n",
        "lecture_forward": "def lecture_forward(x, y, z):\n    r = scalar.lecture_torch(x, y, z)\n"
                           "    return r['q'], r['f']\n",
        "lecture_local_grads": "def lecture_local_grads(x, y, z):\n    r = scalar.lecture_torch(x, y, z)\n"
                               "    return r['df_dq'], r['df_dz'], r['dq_dx'], r['dq_dy']\n",
        "lecture_chain": "def lecture_backprop(x, y, z):\n    r = scalar.lecture_torch(x, y, z)\n"
                         "    return r['f'], r['df_dx'], r['df_dy'], r['df_dz_total']\n",
    },
    "02_fully_connected": {
        "fit_lambda": "from goingdeeper import resnet\n\n\ndef fit_lambda(norms):\n    L = len(norms)\n"
                      "    return resnet.fit_rate(range(1, L + 1), norms, blocks_per_depth=lambda k: L - k)\n",
    },
    "03_batchnorm": {
        "bn_dvar": "import numpy as np\nfrom goingdeeper import bn\n\n\ndef bn_backward_dvar(dxhat, x, mu, var, eps):\n"
                   "    return bn.bn_intermediate_grads(x, np.ones(x.shape[1]), dxhat, eps, mu=mu)['dvar']\n",
        "bn_dmu": "import numpy as np\nfrom goingdeeper import bn\n\n\ndef bn_backward_dmu(dxhat, dvar, x, mu, var, eps):\n"
                  "    return bn.bn_intermediate_grads(x, np.ones(x.shape[1]), dxhat, eps, mu=mu)['dmu']\n",
        "bn_dx": "import numpy as np\nfrom goingdeeper import bn\n\n\ndef bn_backward_dx(dxhat, dvar, dmu, x, mu, var, eps):\n"
                 "    return bn.bn_intermediate_grads(x, np.ones(x.shape[1]), dxhat, eps)['dx']\n",
    },
    "04_resnet": {
        "conv_cost": "from goingdeeper import resnet\n\n\ndef conv_output_size(n, k, stride=1, padding=0):\n"
                     "    return resnet.torch_conv_cost(n, n, 1, 1, k, stride, padding)[0][2]\n\n\n"
                     "def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):\n"
                     "    return resnet.torch_conv_cost(h, w, c_in, c_out, k, stride, padding)[1]\n\n\n"
                     "def conv_weights(c_in, c_out, k):\n    return c_in * c_out * k * k\n",
        "lecture_1x1": "from goingdeeper.resnet import torch_conv_cost as cost\n\n"
                       "direct = cost(28, 28, 192, 32, 5, 1, 2)[1]\nreduce = cost(28, 28, 192, 16, 1)[1]\n"
                       "expand = cost(28, 28, 16, 32, 5, 1, 2)[1]\ntotal = reduce + expand\nspeedup = direct / total\n"
                       "weights_direct = 192 * 32 * 5 * 5\nweights_bottleneck = 192 * 16 + 16 * 32 * 5 * 5\n",
        "preact_block": "from goingdeeper import models\n\n\nclass PreActBlock(models.PreActBlock):\n    pass\n",
        "cifar_family": "import inspect\nimport goingdeeper.models\n\nexec(inspect.getsource(goingdeeper.models))\n\n\n"
                        "def cifar_resnet(depth, residual=True):\n    return cifar_net(depth, residual=residual)\n",
    },
    "05_degradation": {
        "augment": "from goingdeeper import cifar\n\n\ndef augment(x, generator=None, pad=4):\n"
                   "    return cifar.augment(x, generator, pad)\n",
        "train_step": "from goingdeeper import train\n\n\ndef train_step(model, optimizer, x, y):\n"
                      "    loss, wrong = train.train_step(model, optimizer, x, y)\n    return loss.item(), int(wrong)\n",
        "evaluate": "from goingdeeper import train\n\n\ndef evaluate(model, x, y, batch_size=1000):\n"
                    "    return train.evaluate(model, x, y, batch_size)\n",
        "lr_at": "from goingdeeper import train\n\n\ndef lr_at(iteration, total, base_lr, warmup=False):\n"
                 "    return train.step_lr(iteration, total, base_lr, warmup)\n",
    },
}


def _names(source: str) -> list[str]:
    """The names an answer cell defines at its top level (functions, classes, assigned names)."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def _from_reference(assignment: str, source: str) -> str:
    lines = ["from goingdeeper.grading import load_reference", "", f"_key = load_reference({TOPIC[assignment]!r})"]
    lines += [f"{name} = _key.{name}" for name in _names(source)]
    return "\n".join(lines) + "\n"


def answer_key(assignment: str, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The solution with every answer cell replaced by the key's (see the module's docstring)."""
    nb = nbformat.from_dict(solution)
    answers = set(answer_ids(nb))
    package = PACKAGE.get(assignment, {})
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers and cell.cell_type == "code":
            cell.source = package.get(gid) or _from_reference(assignment, cell.source)
    return nb
