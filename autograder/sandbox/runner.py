"""The sandboxed side of grading: runs one student's notebook cells and answers the grader.

Started by the grader inside the sandbox (see ``autograder/trusted.py``) as

    python -E -s runner.py FD

where FD is one end of a socket pair. It executes the cells the grader sends
(with IPython, so magics work as in Jupyter) and answers requests about the
objects the student's code made: look up a name, get an attribute, call a
function. Answers are plain data or references (see ``wire.py``).

Nothing here is trusted: the student's code runs in this process and can
change anything in it, this file included. The grader treats every answer as
untrusted data and makes all comparisons in its own process.
"""

from __future__ import annotations

import builtins
import io
import operator
import os
import socket
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

MAX_CELL_OUTPUT = int(os.environ.get("GRADER_MAX_CELL_OUTPUT", 200_000))

WATCHED = {
    "numpy": ["allclose", "isclose", "array_equal", "testing.assert_allclose", "abs", "max", "isfinite"],
    "torch": ["allclose", "isclose", "equal", "autograd.grad", "Tensor.backward"],
    "math": ["isclose", "isfinite", "isnan", "fabs"],
    "goingdeeper.checks": ["expect_close", "expect_true", "as_number", "call", "unpack", "passed"],
    "goingdeeper.scalar": ["check_node", "check_backward", "check_topological_order", "run_torch"],
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


class Runner:
    def __init__(self, sock: socket.socket) -> None:
        self.pid = os.getpid()
        self.sock = sock
        self.refs: dict[int, object] = {}
        self.ref_of: dict[int, int] = {}
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
        return report + self.flags

    # -- references ------------------------------------------------------------------------
    def make_ref(self, obj: object) -> dict:
        key = id(obj)
        n = self.ref_of.get(key)
        if n is None or self.refs.get(n) is not obj:
            n = len(self.refs) + 1
            self.refs[n] = obj
            self.ref_of[key] = n
            try:
                if (obj == AlwaysDifferent()) is True:
                    self.flags.append(f"an object of type {type(obj).__qualname__} compares equal to anything")
            except BaseException:  # noqa: BLE001 - the student's __eq__ may do anything
                pass
        t = type(obj)
        return {
            "__ref__": n,
            "type": f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"[:200],
            "callable": callable(obj),
        }

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
                                  "kwargs": self.encode(dict(kwargs))})
            reply = wire.recv(self.sock)
            if "error" in reply:
                error = reply["error"]
                cls = getattr(builtins, str(error.get("type")), None)
                if not (isinstance(cls, type) and issubclass(cls, Exception)):
                    cls = RuntimeError
                raise cls(str(error.get("message", "")))
            return self.decode(reply.get("value"))

        grader_function.__name__ = f"grader_function_{number}"
        return grader_function

    def encode(self, obj: object):
        return wire.encode(obj, self.make_ref)

    def decode(self, data):
        return wire.decode(data, self.resolve_ref)

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

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "run":
            return self.run_cell(str(msg["source"]))
        if op == "tamper":
            return {"value": self.tamper_report()}
        if op == "describe":
            obj = self.ns.get(str(msg["name"]), AlwaysDifferent)
            if obj is AlwaysDifferent:
                return {"value": None}
            return {"value": [str(getattr(obj, "__module__", "")), str(getattr(obj, "__qualname__", ""))]}
        if op == "lookup":
            name = str(msg["name"])
            if name not in self.ns:
                return {"error": {"type": "NameError", "message": f"name '{name}' is not defined"}}
            return {"value": self.encode(self.ns[name])}
        target = self.decode(msg["target"]) if "target" in msg else None
        if op == "getattr":
            return {"value": self.encode(getattr(target, str(msg["name"])))}
        if op == "setattr":
            setattr(target, str(msg["name"]), self.decode(msg["value"]))
            return {"value": None}
        if op == "call":
            args = self.decode(msg.get("args", []))
            kwargs = self.decode(msg.get("kwargs", {"__dict__": []}))
            value = target(*args, **kwargs)
            # Arrays arrive as copies: send their final contents back, so in-place changes reach the caller.
            np = sys.modules.get("numpy")
            after = [[i, self.encode(a)] for i, a in enumerate(args) if np is not None and type(a) is np.ndarray]
            after += [[k, self.encode(a)] for k, a in kwargs.items() if np is not None and type(a) is np.ndarray]
            return {"value": self.encode(value), "arrays_after": after}
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

    def serve(self) -> None:
        while True:
            try:
                msg = wire.recv(self.sock)
            except (EOFError, OSError):
                return
            except KeyboardInterrupt:
                continue
            try:
                reply = self.handle(msg)
                if os.getpid() != self.pid:  # a process the student's code forked: it must not answer
                    os._exit(0)
            except KeyboardInterrupt:
                reply = {"error": {"type": "KeyboardInterrupt", "message": "interrupted by the grader"}}
            except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing ends the loop
                if os.getpid() != self.pid:
                    os._exit(0)
                reply = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000]}}
            try:
                wire.send(self.sock, reply)
            except (TypeError, ValueError, wire.WireError) as exc:
                wire.send(self.sock, {"error": {"type": "WireError", "message": str(exc)[:500]}})
            except KeyboardInterrupt:
                continue


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    runner = Runner(sock)
    wire.send(sock, {"hello": os.getpid()})
    runner.serve()


if __name__ == "__main__":
    main()
