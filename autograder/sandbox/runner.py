"""The sandboxed side of grading: runs one student's notebook cells and answers the grader.

Started by the grader inside the sandbox (see ``trusted.py``) as

    python -E -s runner.py FD

where FD is one end of a socket pair. It executes the cells the grader sends
(with IPython, so magics work as in Jupyter) and answers requests about the
objects the student's code made: look up a name, get an attribute, call a
function, run autograd's backward through a call. Answers are plain data or
references (see ``wire.py``).

Nothing here is trusted: the student's code runs in this process and can
change anything in it, this file included. The grader treats every answer as
untrusted data, bounds it, and makes all comparisons in its own process.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import operator
import os
import socket
import sys
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

MAX_CELL_OUTPUT = int(os.environ.get("GRADER_MAX_CELL_OUTPUT", 200_000))
MAX_GRAPHS = 32  # autograd graphs of recent calls kept for a backward request

WATCHED = {
    "numpy": ["allclose", "isclose", "array_equal", "testing.assert_allclose", "abs", "max", "isfinite"],
    "torch": ["allclose", "isclose", "equal", "autograd.grad", "Tensor.backward"],
    "math": ["isclose", "isfinite", "isnan", "fabs"],
    "goingdeeper.checks": ["expect_close", "expect_true", "as_number", "call", "unpack", "passed"],
    "goingdeeper.scalar": ["check_node", "check_backward", "check_topological_order", "run_torch", "fit_tiny_mlp",
                           "train_tiny_mlp", "_train_tiny_mlp_here", "_initial_weights"],
}
BUILTINS_WATCHED = ["abs", "isinstance", "len", "float", "int", "print", "round", "max", "min", "sum", "all", "any",
                    "__import__", "getattr", "hasattr", "id", "type", "zip", "range", "AssertionError"]


def _resolve(module_name: str, dotted: str):
    obj = sys.modules.get(module_name)
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


class CappedWriter(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0
        self.limit = limit

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(s[:room])
            self.kept += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[... {self.dropped} more characters of output dropped by the grader]\n"
        return out


class AlwaysDifferent:
    """Compared with this, an honest object says 'not equal'."""

    __slots__ = ()


class LentObject:
    """An object the grader lent (a random generator, say): its public methods run in the grader."""

    def __init__(self, runner: "Runner", number: int, type_name: str) -> None:
        self._runner, self._number, self._type = runner, number, type_name

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._runner.callback(self._number, name)

    def __repr__(self) -> str:
        return f"<{self._type} lent by the grader>"


def _tensors(value, depth: int = 0) -> list:
    """Tensors in ``value`` (lists, tuples, dict values), in the order the grader walks them too."""
    torch = sys.modules.get("torch")
    if torch is None or depth > 4:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v, depth + 1)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v, depth + 1)]
    return []


class Runner:
    def __init__(self, sock: socket.socket) -> None:
        self.pid = os.getpid()
        self.sock = sock
        self.refs: dict[int, object] = {}
        self.ref_of: dict[int, int] = {}
        self.next_ref = 1
        self.graphs: dict[int, tuple[list, list]] = {}
        self.next_graph = 1
        self.flags: list[str] = []
        self._import_watched()
        self.originals = self._snapshot()
        from IPython.core.interactiveshell import InteractiveShell

        self.shell = InteractiveShell.instance(colors="NoColor")
        self.ns = self.shell.user_ns

    # -- the tamper report --------------------------------------------------------------
    @staticmethod
    def _import_watched() -> None:
        for name in WATCHED:
            try:
                __import__(name)
            except Exception:  # noqa: BLE001 - torch may be absent
                pass

    def _snapshot(self) -> dict[str, int]:
        snap = {f"builtins.{n}": id(getattr(builtins, n, None)) for n in BUILTINS_WATCHED}
        for module, names in WATCHED.items():
            for name in names:
                snap[f"{module}.{name}"] = id(_resolve(module, name))
        return snap

    def tamper_report(self) -> list[str]:
        now = self._snapshot()
        changed = sorted(k for k, v in self.originals.items() if now.get(k) != v)
        report = [f"replaced {name}" for name in changed]
        return report + self.flags[:50]

    def _note_equal_to_anything(self, obj: object) -> None:
        try:
            if (obj == AlwaysDifferent()) is True:
                flag = f"an object of type {type(obj).__qualname__} compares equal to anything"
                if flag not in self.flags:
                    self.flags.append(flag)
        except BaseException:  # noqa: BLE001 - the student's __eq__ may do anything
            pass

    # -- references ------------------------------------------------------------------------
    def make_ref(self, obj: object) -> dict:
        key = id(obj)
        n = self.ref_of.get(key)
        if n is None or self.refs.get(n) is not obj:
            n = self.next_ref
            self.next_ref += 1
            self.refs[n] = obj
            self.ref_of[key] = n
            self._note_equal_to_anything(obj)
        t = type(obj)
        ref = {
            "__ref__": n,
            "type": f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"[:200],
            "callable": callable(obj),
        }
        name = getattr(obj, "__name__", None) if callable(obj) else None
        if isinstance(name, str):
            ref["name"] = name[:100]
        ref["mro"] = [f"{getattr(c, '__module__', '?')}.{getattr(c, '__qualname__', '?')}"[:200]
                      for c in getattr(t, "__mro__", ())[:30]]
        return ref

    def free(self, numbers) -> None:
        for n in numbers if isinstance(numbers, list) else []:
            obj = self.refs.pop(n, None) if isinstance(n, int) else None
            if obj is not None and self.ref_of.get(id(obj)) == n:
                del self.ref_of[id(obj)]

    def resolve_ref(self, data: dict) -> object:
        if "__callback__" in data:
            if data.get("object"):
                return LentObject(self, int(data["__callback__"]), str(data.get("type", "object")))
            return self.callback(int(data["__callback__"]))
        try:
            return self.refs[int(data["__ref__"])]
        except (KeyError, ValueError, TypeError):
            raise wire.WireError("unknown reference") from None

    def callback(self, number: int, method: str | None = None):
        """A function (or an object's method) that the grader lent to the student's code: calling it asks the grader."""

        def grader_function(*args, **kwargs):
            wire.send(self.sock, {"callback": number, "method": method, "args": self.encode(list(args)),
                                  "kwargs": self.encode(dict(kwargs))}, limit=wire.MAX_REPLY)
            while True:  # the grader may ask about the student's objects before it answers
                reply = wire.recv(self.sock)
                if "op" not in reply:
                    break
                self.answer(reply)
            if "error" in reply:
                error = reply["error"]
                cls = getattr(builtins, str(error.get("type")), None)
                if not (isinstance(cls, type) and issubclass(cls, Exception)):
                    cls = RuntimeError
                raise cls(str(error.get("message", "")))
            self._copy_back(list(args), kwargs, reply.get("arrays_after"))
            return self.decode(reply.get("value"))

        grader_function.__name__ = f"grader_function_{number}"
        return grader_function

    def encode(self, obj: object):
        return wire.encode(obj, self.make_ref, coerced=self._note_equal_to_anything, live_parameters=True)

    def decode(self, data):
        return wire.decode(data, self.resolve_ref)

    @staticmethod
    def _arrays_after(args: list, kwargs: dict, encode) -> list:
        """Final contents of the numpy array arguments: in-place changes must reach the caller."""
        np = sys.modules.get("numpy")
        if np is None:
            return []
        after = [[i, encode(a)] for i, a in enumerate(args) if type(a) is np.ndarray]
        return after + [[k, encode(a)] for k, a in kwargs.items() if type(a) is np.ndarray]

    def _copy_back(self, args: list, kwargs: dict, after) -> None:
        np = sys.modules.get("numpy")
        for key, data in after if isinstance(after, list) and np is not None else []:
            original = args[key] if isinstance(key, int) and 0 <= key < len(args) else kwargs.get(key)
            if isinstance(original, np.ndarray) and original.flags.writeable:
                try:
                    value = self.decode(data)
                    if isinstance(value, np.ndarray) and value.shape == original.shape:
                        np.copyto(original, value, casting="unsafe")
                except (wire.WireError, ValueError, TypeError):
                    pass

    # -- requests --------------------------------------------------------------------------
    def run_cell(self, source: str) -> dict:
        out = CappedWriter(MAX_CELL_OUTPUT)
        err = CappedWriter(MAX_CELL_OUTPUT)
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            result = self.shell.run_cell(source, store_history=False, silent=False)
        finally:
            if os.getpid() != self.pid:  # a forked child finished the cell: end it here
                os._exit(0)
            sys.stdout, sys.stderr = old
        error = result.error_before_exec or result.error_in_exec
        reply = {"ok": error is None, "stdout": out.text(), "stderr": err.text()}
        if error is not None:
            reply["error"] = {
                "ename": type(error).__name__,
                "evalue": str(error)[:2000],
                "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))[-8000:],
            }
        return reply

    def _register_graph(self, args: list, kwargs: dict, value) -> dict | None:
        """Keep the autograd graph of a call, so that the grader's backward can come back through it."""
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        outputs = [t for t in _tensors(value) if t.requires_grad]
        if not outputs:
            return None
        inputs = [t for t in _tensors(args) + _tensors(kwargs) if t.requires_grad]
        number = self.next_graph
        self.next_graph += 1
        self.graphs[number] = (inputs, outputs)
        for old in [k for k in self.graphs if k <= number - MAX_GRAPHS]:
            del self.graphs[old]
        return {"id": number, "outputs": [i for i, t in enumerate(_tensors(value)) if t.requires_grad]}

    @staticmethod
    def build(factory: str, args, kwargs):
        """Call ``factory`` (a dotted name in goingdeeper or torch only) with ``args`` and ``kwargs``."""
        import importlib
        import re

        if not re.fullmatch(r"(goingdeeper|torch)(\.[A-Za-z_][A-Za-z0-9_]*)+", factory):
            raise ValueError(f"{factory!r} is not something the grader may build")
        parts = factory.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for part in parts[cut:]:
                obj = getattr(obj, part)
            return obj(*args, **{str(k): v for k, v in kwargs.items()})
        raise ValueError(f"{factory!r} cannot be imported")

    def backward(self, msg: dict) -> dict:
        torch = sys.modules["torch"]
        graph = self.graphs.pop(int(msg["graph"]), None)
        if graph is None:
            raise RuntimeError("the autograd graph of this result is gone: compute the result again")
        inputs, outputs = graph
        grads = self.decode(msg["grads"])
        if not isinstance(grads, list) or len(grads) != len(outputs):
            raise wire.WireError("malformed backward request")
        grads = [g.to(o.dtype) if isinstance(g, torch.Tensor) else None for g, o in zip(grads, outputs)]
        for t in inputs:
            t.grad = None
        torch.autograd.backward(outputs, grad_tensors=grads)
        return {"value": self.encode([t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs])}

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        self.free(msg.get("free"))
        if op == "run":
            return self.run_cell(str(msg["source"]))
        if op == "tamper":
            return {"value": self.tamper_report()}
        if op == "describe":
            obj = self.ns.get(str(msg["name"]), AlwaysDifferent)
            if obj is AlwaysDifferent:
                return {"value": None}
            return {"value": [str(getattr(obj, "__module__", "")), str(getattr(obj, "__qualname__", "")),
                              callable(obj)]}
        if op == "lookup":
            name = str(msg["name"])
            if name not in self.ns:
                return {"error": {"type": "NameError", "message": f"name '{name}' is not defined"}}
            return {"value": self.encode(self.ns[name])}
        if op == "backward":
            return self.backward(msg)
        if op == "build":  # an object the test needs beside the student's code (a package network, an optimizer)
            return {"value": self.encode(self.build(str(msg["factory"]), self.decode(msg.get("args", [])),
                                                    self.decode(msg.get("kwargs", {"__dict__": []}))))}
        target = self.decode(msg["target"]) if "target" in msg else None
        if op == "getattr":
            return {"value": self.encode(getattr(target, str(msg["name"])))}
        if op == "setattr":
            setattr(target, str(msg["name"]), self.decode(msg["value"]))
            return {"value": None}
        if op == "path":  # a chain of attributes and items, followed here from the target in one go
            for kind, key in msg["steps"]:
                target = getattr(target, str(key)) if kind == "attr" else target[self.decode(key)]
            return {"value": self.encode(target)}
        if op == "call":
            args = self.decode(msg.get("args", []))
            kwargs = self.decode(msg.get("kwargs", {"__dict__": []}))
            torch = sys.modules.get("torch")
            grad = torch.set_grad_enabled(bool(msg.get("grad", True))) if torch else contextlib.nullcontext()
            with grad:
                value = target(*args, **kwargs)
            reply = {"value": self.encode(value), "arrays_after": self._arrays_after(args, kwargs, self.encode)}
            graph = self._register_graph(args, kwargs, value) if msg.get("grad") else None
            if graph:
                reply["graph"] = graph
            return reply
        if op == "binop":
            fn = getattr(operator, str(msg["name"]))
            other = self.decode(msg["other"])
            value = fn(other, target) if msg.get("reflected") else fn(target, other)
            return {"value": self.encode(value)}
        if op == "unary":
            name = str(msg["name"])
            fn = {"len": len, "float": float, "int": int, "bool": bool, "neg": operator.neg, "repr": repr,
                  "list": list, "index": operator.index}[name]
            value = fn(target)
            if name == "repr":
                value = str(value)[:500]
            return {"value": self.encode(value)}
        if op == "getitem":
            return {"value": self.encode(target[self.decode(msg["key"])])}
        return {"error": {"type": "WireError", "message": f"unknown op {op!r}"}}

    def handle_captured(self, msg: dict) -> dict:
        """Handle a request about the student's objects, keeping what the student's code printed or warned."""
        if msg.get("op") == "run":
            return self.handle(msg)
        out, err = CappedWriter(MAX_CELL_OUTPUT), CappedWriter(MAX_CELL_OUTPUT)
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    reply = self.handle(msg)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing ends the loop
                    if os.getpid() != self.pid:
                        os._exit(0)
                    reply = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000],
                                       "where": _student_line(exc)}}
        finally:
            sys.stdout, sys.stderr = old
        if out.kept or out.dropped:
            reply["out"] = out.text()
        if err.kept or err.dropped:
            reply["err"] = err.text()
        if caught:
            reply["warnings"] = [[w.category.__name__, str(w.message)[:500], str(w.filename)[-200:], int(w.lineno)]
                                 for w in caught[:20]]
        return reply

    def answer(self, msg: dict) -> None:
        try:
            reply = self.handle_captured(msg)
            if os.getpid() != self.pid:  # a process the student's code forked: it must not answer
                os._exit(0)
        except KeyboardInterrupt:
            reply = {"error": {"type": "KeyboardInterrupt", "message": "interrupted by the grader"}}
        except BaseException as exc:  # noqa: BLE001
            if os.getpid() != self.pid:
                os._exit(0)
            reply = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000]}}
        reply["id"] = msg.get("id")
        try:
            wire.send(self.sock, reply, limit=wire.MAX_REPLY)
        except (TypeError, ValueError, wire.WireError) as exc:
            wire.send(self.sock, {"error": {"type": "WireError", "message": str(exc)[:500]}, "id": msg.get("id")})

    def serve(self) -> None:
        while True:
            try:
                msg = wire.recv(self.sock)
            except (EOFError, OSError):
                return
            except KeyboardInterrupt:
                continue
            try:
                self.answer(msg if isinstance(msg, dict) else {})
            except KeyboardInterrupt:
                continue


def _student_line(exc: BaseException) -> str:
    """Where in the student's own cells an exception was raised: 'line N: <code>', or ''."""
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith("<ipython-input-") or "/ipykernel_" in code.co_filename:
            import linecache

            text = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            where = f"line {tb.tb_lineno}, in {code.co_name}: {text}"[:300]
        tb = tb.tb_next
    return where


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    runner = Runner(sock)
    wire.send(sock, {"hello": os.getpid()})
    runner.serve()


if __name__ == "__main__":
    main()
