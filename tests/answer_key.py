"""An answer key made only of what the course installs: the grader must give it 0 and say why.

For every answer cell of every notebook, a replacement that calls, subclasses, imports or execs the
course's package instead of doing the work. Where the package has code that does the exercise (a torch
oracle, a model), the key uses that, as a student who read the package would (it has no training pieces: 05's
answers all come from the references); every
other answer comes from the graders' references through ``goingdeeper.grading.load_reference``, which a
student with the course checkout can call. Without the own-work rule this key would earn full marks
(the references are right); with it, every test cell must score 0 with the rule's message, in both graders.
"""

from __future__ import annotations

import ast

import nbformat

from instructor.scratch import answer_ids

TOPIC = {"01_computational_graphs": "computational_graphs", "02_fully_connected": "fully_connected",
         "03_batchnorm": "batchnorm", "04_resnet": "resnet", "05_degradation": "degradation"}

#: The package's own implementations, by answer: what a student who read goingdeeper/ could call.
PACKAGE = {
    "01_computational_graphs": {  # the engine checks' torch oracle, run on the exercise as a program
        "sin_graph": "from goingdeeper.scalar import Program, Step, run_torch\n\n\ndef sin_graph(x, y):\n"
                     "    p = Program((Step('input', value=0), Step('input', value=1), Step('add', (0, 1)),\n"
                     "                 Step('sin', (2,))), 2)\n"
                     "    L, (dx, dy) = run_torch(p, [x, y])\n    return x + y, L, dx, dx, dy\n",
        "lecture_chain": "from goingdeeper.scalar import Program, Step, run_torch\n\n\ndef lecture_backprop(x, y, z):\n"
                         "    p = Program((Step('input', value=0), Step('input', value=1), Step('input', value=2),\n"
                         "                 Step('add', (0, 1)), Step('mul', (3, 2))), 3)\n"
                         "    f, grads = run_torch(p, [x, y, z])\n    return (f, *grads)\n",
    },
    "04_resnet": {
        "conv_cost": "from goingdeeper import resnet\n\n\ndef conv_output_size(n, k, stride=1, padding=0):\n"
                     "    return (n + 2 * padding - k) // stride + 1\n\n\n"
                     "def conv_multiplies(h, w, c_in, c_out, k, stride=1, padding=0):\n"
                     "    return conv_output_size(h, k, stride, padding) * conv_output_size(w, k, stride, padding) * "
                     "conv_weights(c_in, c_out, k)\n\n\n"
                     "def conv_weights(c_in, c_out, k):\n    return resnet.count_parameters(nn.Conv2d(c_in, c_out, k, bias=False))\n",
        "preact_block": "from goingdeeper import models\n\n\nclass PreActBlock(models.PreActBlock):\n    pass\n",
        "cifar_family": "import inspect\nimport goingdeeper.models\n\nexec(inspect.getsource(goingdeeper.models))\n\n\n"
                        "def cifar_resnet(depth, residual=True):\n    return cifar_net(depth, residual=residual)\n",
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
