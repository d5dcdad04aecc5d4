"""The grader's side of the sandbox: start it, talk to it, and see the student's objects through proxies.

The student's notebook runs in a separate process (``runner.py``) inside a
sandbox: bubblewrap when the machine has it (read-only file system, the
course folder, the grader's home and /tmp hidden, no network, its own PID
namespace), an unprivileged user id when the grader runs as root, and
resource limits (address space, processes, file size, open files).

Test cells run *here*, in the grader's process, against :class:`Proxy`
objects that stand for the student's objects. Every answer from the sandbox
is plain data or a reference (``wire.py``), so whatever the student's code
does to its own interpreter (patching numpy, our checks, builtins; objects
that equal anything) cannot reach the comparisons made here.
"""

from __future__ import annotations

import builtins
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import wire

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class Limits:
    """Per-submission limits. Times in seconds, sizes in MiB."""

    cell_timeout: float = 60.0
    total_timeout: float = 600.0
    memory_mb: int = 4096
    max_processes: int = 128
    file_size_mb: int = 64
    output_kb: int = 200
    tmp_mb: int = 256


class RunnerDied(BaseException):
    """The sandboxed process ended or had to be killed; the message says why.

    A BaseException, like KeyboardInterrupt, so that test code catching
    Exception (our ``call`` helper does) cannot swallow it.
    """


class CellTimeout(Exception):
    """The student's code ran past the time limit and was interrupted."""


class RemoteError(Exception):
    """An exception raised by the student's code (type name and message only)."""


_BUILTIN_ERRORS = {
    name: getattr(builtins, name)
    for name in ("AttributeError", "NameError", "NotImplementedError", "RecursionError", "TypeError", "ValueError",
                 "KeyError", "IndexError", "ZeroDivisionError", "AssertionError", "RuntimeError", "StopIteration",
                 "OverflowError", "MemoryError", "FloatingPointError", "LookupError", "ArithmeticError")
}


def _remote_exception(error: dict) -> BaseException:
    name = str(error.get("type", "Error"))
    message = str(error.get("message", ""))[:2000]
    if name == "KeyboardInterrupt":
        return CellTimeout(message)
    cls = _BUILTIN_ERRORS.get(name)
    if cls is not None:
        return cls(message)
    safe = "".join(ch for ch in name if ch.isalnum() or ch == "_")[:60] or "Error"
    return type(safe, (RemoteError,), {})(message)


def bwrap_available() -> bool:
    """True when bubblewrap can make a sandbox on this machine (namespaces allowed)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--dev", "/dev",
                            "--proc", "/proc", "true"], capture_output=True)
    return probe.returncode == 0


def _count_tasks(uid: int) -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real == uid:
                total += proc.info["num_threads"] or 1
        except (psutil.Error, TypeError):
            continue
    return total


@dataclass
class Sandbox:
    """One sandboxed runner process for one submission, restartable."""

    scratch: Path
    limits: Limits
    uid: int | None = None  # run as this user id (root only)
    hide: list[Path] = field(default_factory=list)
    use_bwrap: bool = True
    log: list[str] = field(default_factory=list)

    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None
    on_callback: Any = None  # answers the student's calls of functions the grader lent it
    runner_pid: int | None = None
    output: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        grader = self.scratch / "grader"
        grader.mkdir(parents=True, exist_ok=True)
        for name in ("runner.py", "wire.py"):
            shutil.copy(HERE / name, grader / name)
        (self.scratch / "work").mkdir(exist_ok=True)
        if self.uid is not None:
            for path in [self.scratch, *self.scratch.rglob("*")]:
                os.chown(path, self.uid, self.uid)

    # -- starting and stopping ----------------------------------------------------------
    def _command(self, fd: int) -> list[str]:
        python = [os.path.join(os.path.normpath(sys.prefix), "bin", "python"), "-E", "-s"]
        if not self.use_bwrap:
            return [*python, str(self.scratch / "grader" / "runner.py"), str(fd)]
        cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--size", str(self.limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        home = Path.home()
        hidden = [home] if str(home) not in ("/", "") else []
        hidden += [ROOT, *self.hide]
        for path in hidden:
            if path.exists():
                cmd += ["--tmpfs", str(path)]
        # What the notebooks need back: the interpreter, the virtual environment, the helper package, data.
        for path in {Path(sys.base_prefix), Path(sys.prefix), ROOT / "goingdeeper", ROOT / "data"}:
            if path.exists():
                cmd += ["--ro-bind", str(path), str(path)]
        cmd += ["--bind", str(self.scratch), "/tmp/grading", "--chdir", "/tmp/grading/work",
                "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--die-with-parent", "--new-session",
                "--setenv", "HOME", "/tmp/grading/work", "--setenv", "MPLBACKEND", "Agg",
                "--setenv", "MPLCONFIGDIR", "/tmp", "--setenv", "TMPDIR", "/tmp", "--"]
        if self.uid is not None:
            cmd += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all"]
        return cmd + [*python, "/tmp/grading/grader/runner.py", str(fd)]

    def _preexec(self) -> None:
        mib = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (self.limits.memory_mb * mib,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limits.file_size_mb * mib,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        if self.uid is not None:
            nproc = self.limits.max_processes
        else:  # the limit counts every task of this user: leave room for what already runs
            nproc = _count_tasks(os.getuid()) + self.limits.max_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if not self.use_bwrap:
            os.setsid()
            if self.uid is not None:
                os.setgroups([])
                os.setgid(self.uid)
                os.setuid(self.uid)

    def start(self) -> None:
        parent, child = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOINGDEEPER_", "JUPYTER", "NBGRADER"))}
        # One thread per sandbox: the grader runs submissions side by side, and torch's thread pools
        # fighting over the same cores make small networks many times slower.
        env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        env.update({"MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "NBGRADER_EXECUTION": "autograde",
                    "GRADER_MAX_CELL_OUTPUT": str(self.limits.output_kb * 1024)})
        if not self.use_bwrap:
            env["HOME"] = str(self.scratch / "work")
        self.output = bytearray()
        self.proc = subprocess.Popen(
            self._command(child.fileno()), pass_fds=(child.fileno(),), env=env,
            cwd=str(self.scratch / "work"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=self._preexec,
        )
        child.close()
        self.sock = parent
        self._drain_output_in_background()
        hello = self._recv(timeout=120, what="starting the notebook's process")
        if "hello" not in hello:
            raise RunnerDied("the notebook's process did not start properly")
        self.runner_pid = self._find_runner_pid()

    def _drain_output_in_background(self) -> None:
        import threading

        cap = self.limits.output_kb * 1024
        proc, buf = self.proc, self.output

        def drain() -> None:
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
                if not chunk:
                    return
                if len(buf) < cap:
                    buf.extend(chunk[: cap - len(buf)])

        threading.Thread(target=drain, daemon=True).start()

    def _find_runner_pid(self) -> int | None:
        import psutil

        assert self.proc is not None
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            return None
        for p in procs:
            try:
                if any(part.endswith("runner.py") for part in p.cmdline()) and "python" in p.name():
                    return p.pid
            except psutil.Error:
                continue
        return self.proc.pid

    def kill(self) -> None:
        """Kill the sandbox and everything it started."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.use_bwrap:
                self.proc.kill()
            else:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.uid is not None:
            self._kill_all_of_uid()
        self.proc = None

    def _kill_all_of_uid(self) -> None:
        """As root: end every process of the sandbox's user id (fork bombs that left the process group)."""
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(self.uid)
                os.setuid(self.uid)
                for _ in range(3):
                    os.kill(-1, signal.SIGKILL)
            except BaseException:  # noqa: BLE001
                pass
            os._exit(0)
        os.waitpid(pid, 0)

    def interrupt(self) -> None:
        if self.runner_pid:
            try:
                os.kill(self.runner_pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    # -- messages -----------------------------------------------------------------------
    def _recv(self, timeout: float, what: str) -> dict:
        assert self.sock is not None
        self.sock.settimeout(max(timeout, 0.01))
        try:
            reply = wire.recv(self.sock)
        except socket.timeout:
            raise TimeoutError(what) from None
        except (EOFError, OSError, wire.WireError) as exc:
            code = self.proc.poll() if self.proc else None
            detail = self._death_reason(code)
            self.kill()
            raise RunnerDied(f"the notebook's process ended while {what}{detail}") from exc
        if not isinstance(reply, dict):
            raise RunnerDied("the notebook's process sent a malformed answer")
        return reply

    def _death_reason(self, code: int | None) -> str:
        if code is None:
            time.sleep(0.2)
            code = self.proc.poll() if self.proc else None
        if code is None:
            return ""
        if code > 128 and self.use_bwrap:  # bubblewrap reports a signal as 128 + its number
            code = 128 - code
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                pass
        return f" (exit code {code})"

    def _recv_reply(self, timeout: float, what: str) -> dict:
        """The reply to our request, answering the student's calls of lent functions meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline - time.monotonic(), what)
            if "callback" not in reply:
                return reply
            answer = self.on_callback(reply) if self.on_callback else {
                "error": {"type": "RuntimeError", "message": "no function was lent"}}
            try:
                wire.send(self.sock, answer)
            except OSError as exc:
                self.kill()
                raise RunnerDied(f"the notebook's process is gone ({exc})") from None

    def request(self, msg: dict, timeout: float, what: str) -> dict:
        """Send ``msg``; wait up to ``timeout`` s; on timeout interrupt, then kill. Returns the reply dict."""
        if self.sock is None:
            raise RunnerDied("the notebook's process is not running")
        try:
            wire.send(self.sock, msg)
        except OSError as exc:
            self.kill()
            raise RunnerDied(f"the notebook's process is gone ({exc})") from None
        try:
            return self._recv_reply(timeout, what)
        except TimeoutError:
            self.interrupt()
            try:
                reply = self._recv_reply(5.0, what)
            except TimeoutError:
                self.kill()
                raise RunnerDied(
                    f"{what} ran past the {timeout:.0f} s limit and ignored the interrupt, so it was killed"
                ) from None
            error = reply.get("error") or {}
            if "KeyboardInterrupt" in (error.get("type"), error.get("ename")):
                reply["timed_out"] = True
            return reply


class Remote:
    """The student's namespace as seen from the grader: every object is a value or a :class:`Proxy`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.proxies: dict[int, Proxy] = {}
        self.deadline = float("inf")
        self.calls = 0
        # Attribute reads are cached until the student's code next runs (a call, an operator, a cell):
        # only then can attributes change. Writes from the grader's side update the cache.
        self.attributes: dict[tuple[int, str], Any] = {}
        # Functions of the test (a loss to differentiate, say) lent to the student's code, by number.
        self.lent: list[Any] = []
        sandbox.on_callback = self._answer_callback

    def _answer_callback(self, msg: dict) -> dict:
        try:
            function = self.lent[int(msg["callback"])]
            method = msg.get("method")
            if method is not None:
                if not isinstance(method, str) or method.startswith("_"):
                    raise AttributeError(f"{method!r} is not lent")
                function = getattr(function, method)
            args = wire.decode(msg.get("args", []), self._resolve)
            kwargs = wire.decode(msg.get("kwargs", {"__dict__": []}), self._resolve)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("malformed call")
            return {"value": self._encode(function(*args, **kwargs))}
        except Exception as exc:  # noqa: BLE001 - reported to the student's code as its exception
            return {"error": {"type": type(exc).__name__, "message": str(exc)[:500]}}

    def reset(self) -> None:
        self.proxies.clear()
        self.attributes.clear()

    def _resolve(self, data: dict) -> Any:
        n = int(data["__ref__"])
        proxy = self.proxies.get(n)
        if proxy is None:
            proxy = Proxy(self, n, str(data.get("type", "?"))[:200], bool(data.get("callable")))
            self.proxies[n] = proxy
        return proxy

    def _encode(self, value: Any) -> Any:
        def ref(obj: Any) -> Any:
            if isinstance(obj, Proxy) and object.__getattribute__(obj, "_remote") is self:
                return {"__ref__": object.__getattribute__(obj, "_ref")}
            if isinstance(obj, type):
                raise TypeError(f"a class ({obj.__name__}) cannot be passed to the student's code")
            self.lent.append(obj)  # functions and objects are lent: the student's calls come back here
            return {"__callback__": len(self.lent) - 1, "object": not callable(obj), "type": type(obj).__name__}

        return wire.encode(value, ref)

    def ask(self, msg: dict, what: str, full: bool = False) -> Any:
        self.calls += 1
        if msg["op"] not in ("getattr", "setattr", "lookup"):
            self.attributes.clear()
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise CellTimeout(f"the time limit for this test ran out before {what}")
        reply = self.sandbox.request(msg, remaining, what)
        if reply.get("timed_out"):
            raise CellTimeout(f"{what} ran past the time limit for this test and was interrupted")
        if "error" in reply:
            raise _remote_exception(reply["error"])
        try:
            value = wire.decode(reply.get("value"), self._resolve)
            return {"value": value, "arrays_after": reply.get("arrays_after")} if full else value
        except (wire.WireError, ValueError, TypeError, KeyError) as exc:
            raise RemoteError(f"the student's process sent data the grader cannot read ({exc})") from None

    def lookup(self, name: str) -> Any:
        return self.ask({"op": "lookup", "name": name}, f"looking up {name}")


class Proxy:
    """A student's object that stays in the sandbox. Identity and equality are the grader's own."""

    __slots__ = ("_remote", "_ref", "_type", "_callable", "__weakref__")

    def __init__(self, remote: Remote, ref: int, type_name: str, is_callable: bool) -> None:
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_callable", is_callable)

    def _ask(self, op: str, what: str, **fields: Any) -> Any:
        remote = object.__getattribute__(self, "_remote")
        return remote.ask({"op": op, "target": {"__ref__": object.__getattribute__(self, "_ref")}, **fields}, what)

    def _label(self) -> str:
        return object.__getattribute__(self, "_type").rsplit(".", 1)[-1]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        remote = object.__getattribute__(self, "_remote")
        key = (object.__getattribute__(self, "_ref"), name)
        if key in remote.attributes:
            return remote.attributes[key]
        value = self._ask("getattr", f"reading .{name}", name=name)
        remote.attributes[key] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        remote = object.__getattribute__(self, "_remote")
        self._ask("setattr", f"setting .{name}", name=name, value=remote._encode(value))
        remote.attributes[(object.__getattribute__(self, "_ref"), name)] = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        remote = object.__getattribute__(self, "_remote")
        name = self._label()
        reply = remote.ask({"op": "call", "target": {"__ref__": object.__getattribute__(self, "_ref")},
                            "args": remote._encode(list(args)), "kwargs": remote._encode(dict(kwargs))},
                           f"calling {name}", full=True)
        # In-place changes to array arguments, as Python's own call would show them.
        for key, data in reply.get("arrays_after") or []:
            original = args[key] if isinstance(key, int) and 0 <= key < len(args) else kwargs.get(key)
            if isinstance(original, np.ndarray) and original.flags.writeable:
                try:
                    after = wire.decode(data, remote._resolve)
                    if isinstance(after, np.ndarray) and after.shape == original.shape:
                        np.copyto(original, after, casting="unsafe")
                except (wire.WireError, ValueError, TypeError):
                    pass
        return reply["value"]

    def __repr__(self) -> str:
        return f"<{self._label()} object>"

    def __len__(self) -> int:
        value = self._ask("unary", "len()", name="len")
        if type(value) is not int:
            raise TypeError("len() of the student's object is not an int")
        return value

    def __iter__(self):
        return iter(self._ask("unary", "iterating", name="list"))

    def __getitem__(self, key: Any) -> Any:
        remote = object.__getattribute__(self, "_remote")
        return self._ask("getitem", "indexing", key=remote._encode(key))

    def __float__(self) -> float:
        value = self._ask("unary", "float()", name="float")
        if type(value) is not float:
            raise TypeError("float() of the student's object is not a float")
        return value

    def __bool__(self) -> bool:
        value = self._ask("unary", "bool()", name="bool")
        if type(value) is not bool:
            raise TypeError("bool() of the student's object is not a bool")
        return value

    def __neg__(self) -> Any:
        return self._ask("unary", "negation", name="neg")

    def _binop(self, name: str, other: Any, reflected: bool = False) -> Any:
        remote = object.__getattribute__(self, "_remote")
        return self._ask("binop", f"operator {name}", name=name, other=remote._encode(other), reflected=reflected)

    def __add__(self, other): return self._binop("add", other)  # noqa: E704
    def __radd__(self, other): return self._binop("add", other, True)  # noqa: E704
    def __sub__(self, other): return self._binop("sub", other)  # noqa: E704
    def __rsub__(self, other): return self._binop("sub", other, True)  # noqa: E704
    def __mul__(self, other): return self._binop("mul", other)  # noqa: E704
    def __rmul__(self, other): return self._binop("mul", other, True)  # noqa: E704
    def __truediv__(self, other): return self._binop("truediv", other)  # noqa: E704
    def __rtruediv__(self, other): return self._binop("truediv", other, True)  # noqa: E704
    def __pow__(self, other): return self._binop("pow", other)  # noqa: E704
    def __matmul__(self, other): return self._binop("matmul", other)  # noqa: E704
    def __rmatmul__(self, other): return self._binop("matmul", other, True)  # noqa: E704

    # Equality and hashing stay local: a proxy equals itself only.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__


class RemoteGlobals(dict):
    """Globals for a test cell: the grader's own names first, builtins next, then the student's namespace."""

    def __init__(self, remote: Remote, own: dict) -> None:
        super().__init__(own)
        self.remote = remote

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name):
            raise KeyError(name)  # the interpreter falls back to the real builtins
        try:
            return self.remote.lookup(name)
        except NameError:
            raise KeyError(name) from None
