"""The grader's side of the sandbox: start it, talk to it, and see the student's objects through proxies.

The student's notebook runs in a separate process (``runner.py``) inside a
sandbox: bubblewrap, which shows the process only what ``boundary.py``
allows (read-only system, Python and helper package; a scratch copy of the
submission; no network; its own PID namespace), under an unprivileged user id
of its own when the grader runs as root (leased with a lock, so that grading
runs side by side never share one), and resource limits (address space,
processes, file size, open files).

Test cells run *here*, in the grader's process, against :class:`Proxy`
objects that stand for the student's objects. Every answer from the sandbox
is plain data or a reference (``wire.py``), read before a deadline and
bounded in size, so whatever the student's code does to its own interpreter
(patching numpy, our checks, builtins; objects that equal anything; a runner
that trickles bytes) cannot reach the comparisons made here or stall them.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import boundary, wire

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


class CellTimeout(BaseException):
    """The student's code, or the test's work on it, ran past the time limit.

    A BaseException, so that test code catching Exception (``call`` does) reports it as a timeout.
    """


class SandboxSetupError(Exception):
    """The grader's own set-up failed (the sandbox cannot start Python, cannot see the course's packages
    or data): nothing of a submission's doing, so no submission is recorded for it. The message says what
    failed and what to do."""


class RemoteError(Exception):
    """An exception raised by the student's code (type name and message only)."""

    where = ""  # the line of the student's own code that raised, when the runner could tell


class StudentWarning(UserWarning):
    """A warning the student's code raised while a test ran (its category's name leads the message)."""


_BUILTIN_ERRORS = {
    name: getattr(builtins, name)
    for name in ("AttributeError", "NameError", "NotImplementedError", "RecursionError", "TypeError", "ValueError",
                 "KeyError", "IndexError", "ZeroDivisionError", "AssertionError", "RuntimeError", "StopIteration",
                 "OverflowError", "MemoryError", "FloatingPointError", "LookupError", "ArithmeticError")
}
_WARNINGS = {name: getattr(builtins, name) for name in (
    "RuntimeWarning", "UserWarning", "DeprecationWarning", "FutureWarning", "PendingDeprecationWarning",
    "SyntaxWarning", "ResourceWarning", "UnicodeWarning", "BytesWarning", "ImportWarning")}


def _remote_exception(error: dict) -> BaseException:
    name = boundary.keep_text(error.get("type", "Error"), 100)
    message = boundary.keep_text(error.get("message", ""), 2000)
    if name == "KeyboardInterrupt":
        return CellTimeout(message)
    cls = _BUILTIN_ERRORS.get(name)
    if cls is None:
        safe = "".join(ch for ch in name if ch.isalnum() or ch == "_")[:60] or "Error"
        cls = type(safe, (RemoteError,), {})
    exc = cls(message)
    where = boundary.keep_text(error.get("where", ""), 300)
    if where:
        exc.student_line = where  # read by goingdeeper.checks.call
    return exc


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


# -- user ids ----------------------------------------------------------------------------------
UID_FIRST, UID_COUNT = 61000, 1000
LEASE_DIR = Path("/run/lock/goingdeeper-grader")


class UidLease:
    """An unprivileged user id that no other grading process on this machine holds (root only).

    Each id has a lock file; a lease is an exclusive ``flock`` on it, held until :meth:`release`
    or until the process ends (the kernel drops the lock then, so a crashed run leaks nothing).
    Two grading runs side by side therefore never share an id, and killing every process of the
    leased id (after a fork bomb) cannot reach another run's students.
    """

    def __init__(self, lease_dir: Path = LEASE_DIR) -> None:
        lease_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(lease_dir, 0o755)
        for uid in range(UID_FIRST, UID_FIRST + UID_COUNT):
            fd = os.open(lease_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            _kill_all_of_uid(uid)  # nothing of a crashed earlier holder may survive into this lease
            return
        raise RuntimeError(f"all {UID_COUNT} grading user ids are in use")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _kill_all_of_uid(uid: int) -> None:
    """As root: end every process of ``uid`` (fork bombs that left the process group)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def interpreter_runs_as(uid: int) -> bool:
    """Can an unprivileged ``uid`` start this Python (without bubblewrap it must read it where it lives)?"""
    python = os.path.join(os.path.normpath(sys.prefix), "bin", "python")

    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    try:
        return subprocess.run([python, "-E", "-s", "-c", "import numpy"], preexec_fn=drop, capture_output=True,
                              env=dict(boundary.ENVIRONMENT), cwd="/", timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


PREFLIGHT = """
import importlib, os, sys
missing = []
for name in ("numpy", "torch", "nbformat", "goingdeeper"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
data = os.environ.get("GOINGDEEPER_DATA")
if data and not os.path.isdir(data):
    missing.append(f"the data folder {data}")
if missing:
    raise RuntimeError("cannot import or see " + "; ".join(missing))
"""


def preflight(limits: Limits, *, uid: int | None, use_bwrap: bool, data: Path | None) -> None:
    """Start one sandbox as a submission's would start, with nothing of any submission in it, and check that
    it runs Python with the course's packages and sees the data folder. Raises SandboxSetupError."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="gd-preflight-"))
    try:
        sandbox = Sandbox(scratch, limits, uid=uid, use_bwrap=use_bwrap, data=data)
        try:
            sandbox.start(time.monotonic() + 180)
            reply = sandbox.request({"op": "run", "source": PREFLIGHT}, 180, "checking the sandbox")
        except RunnerDied as exc:
            raise SandboxSetupError(f"the sandbox's Python stopped while importing the course's packages ({exc})"
                                    ) from None
        finally:
            sandbox.kill()
        error = reply.get("error")
        if isinstance(error, dict) or reply.get("timed_out"):
            detail = boundary.keep_text(error.get("evalue", "") if isinstance(error, dict) else "it timed out", 400)
            raise SandboxSetupError(f"the sandbox's Python {detail}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the sandboxed process --------------------------------------------------------------------------
@dataclass
class Sandbox:
    """One sandboxed runner process for one submission, restartable."""

    scratch: Path
    limits: Limits
    uid: int | None = None  # run as this user id (root only)
    use_bwrap: bool = True
    data: Path | None = None  # read-only data folder the notebooks may load
    log: list[str] = field(default_factory=list)

    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None
    on_callback: Any = None  # answers the student's calls of functions the grader lent it
    runner_pid: int | None = None
    output: bytearray = field(default_factory=bytearray)
    in_request: int = 0  # > 0 while a request waits for its reply (nested for callbacks)
    requests: int = 0  # requests sent; each reply must carry its request's number

    def __post_init__(self) -> None:
        grader = self.scratch / "grader"
        grader.mkdir(parents=True, exist_ok=True)
        for name in ("runner.py", "wire.py"):
            shutil.copy(HERE / name, grader / name)
        (self.scratch / "work").mkdir(exist_ok=True)
        (self.scratch / "tmp").mkdir(exist_ok=True)
        if self.uid is not None:
            for path in [self.scratch, *self.scratch.rglob("*")]:
                os.chown(path, self.uid, self.uid)

    # -- starting and stopping ----------------------------------------------------------
    def _command(self, fd: int) -> list[str]:
        python = [os.path.join(os.path.normpath(sys.prefix), "bin", "python"), "-E", "-s"]
        if not self.use_bwrap:
            return [*python, str(self.scratch / "grader" / "runner.py"), str(fd)]
        cmd = [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc",
               "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        for path in boundary.SYSTEM_PATHS:  # the system, read-only (links such as /bin -> usr/bin stay links)
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.exists(path):
                cmd += ["--ro-bind", path, path]
        cmd += ["--dir", "/etc"]
        for name in boundary.ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        # The sandbox's own /tmp (a size-limited tmpfs) comes first, and the read-only binds after it, so that
        # a course, a virtual environment or a data folder that lives under /tmp stays visible on top of it.
        cmd += ["--dev", "/dev", "--proc", "/proc",
                "--size", str(self.limits.tmp_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", "/tmp"]
        binds = [*boundary.python_paths(ROOT / "goingdeeper"), *([self.data] if self.data is not None else [])]
        for path in binds:
            if path == Path(boundary.SANDBOX_ROOT) or Path(boundary.SANDBOX_ROOT) in path.parents:
                raise SandboxSetupError(f"{path} lies inside {boundary.SANDBOX_ROOT}, the folder the sandbox keeps "
                                        "for the submission: move the course, its venv or its data elsewhere")
            if path == Path("/tmp") or path in Path("/tmp").parents:
                raise SandboxSetupError(f"{path} would show the machine's whole /tmp (or more) to the submissions: "
                                        "put the data (GOINGDEEPER_DATA), the course and its venv in folders of "
                                        "their own")
        # bubblewrap makes missing parent folders private (0700): make them traversable for the student's id.
        for parent in sorted({a for p in binds for a in p.parents if a != Path("/")}, key=lambda a: len(a.parts)):
            cmd += ["--perms", "0755", "--dir", str(parent)]
        for path in binds:
            cmd += ["--ro-bind", str(path), str(path)]
        cmd += ["--bind", str(self.scratch), boundary.SANDBOX_ROOT, "--chdir", f"{boundary.SANDBOX_ROOT}/work", "--"]
        if self.uid is not None:
            cmd += [shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        return cmd + [*python, f"{boundary.SANDBOX_ROOT}/grader/runner.py", str(fd)]

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

    def start(self, deadline: float) -> None:
        parent, child = socket.socketpair()
        env = boundary.sandbox_environment(self.limits.output_kb, self.data,
                                           None if self.use_bwrap else self.scratch)
        self.output = bytearray()
        try:
            self.proc = subprocess.Popen(
                self._command(child.fileno()), pass_fds=(child.fileno(),), env=env,
                cwd=str(self.scratch / "work"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, preexec_fn=self._preexec,
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:  # no program, limits refused...
            parent.close()
            child.close()
            raise SandboxSetupError(f"the sandbox could not be started ({type(exc).__name__}: {exc})") from None
        child.close()
        self.sock = parent
        self._drain_output_in_background()
        # Nothing of the submission has run yet: a process that does not start is the grader's failure.
        try:
            hello = self._recv(min(deadline, time.monotonic() + 120), "starting the notebook's process")
        except (RunnerDied, TimeoutError) as exc:
            time.sleep(0.2)  # let the drain thread read what the sandbox said
            said = bytes(self.output).decode("utf-8", "replace").strip().splitlines()
            self.kill()
            raise SandboxSetupError(f"the sandbox could not start the grader's Python ({exc})"
                                    + (f": {said[-1][:300]}" if said else "")) from None
        if "hello" not in hello:
            self.kill()
            raise SandboxSetupError("the sandbox's Python did not start the grader's runner properly")
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
            _kill_all_of_uid(self.uid)
        self.proc = None

    def interrupt(self) -> None:
        if self.runner_pid:
            try:
                os.kill(self.runner_pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    # -- messages -----------------------------------------------------------------------
    def _recv(self, deadline: float, what: str) -> dict:
        """One whole message from the runner before ``deadline``, however it paces its bytes."""
        assert self.sock is not None
        try:
            reply = wire.recv(self.sock, deadline=deadline, limit=wire.MAX_REPLY)
        except wire.WireTimeout:
            raise TimeoutError(what) from None
        except (EOFError, OSError, wire.WireError) as exc:
            code = self.proc.poll() if self.proc else None
            detail = self._death_reason(code)
            if isinstance(exc, wire.WireError):
                detail += f" (it broke the protocol: {exc})"
            self.kill()
            raise RunnerDied(f"the notebook's process ended while {what}{detail}") from exc
        if not isinstance(reply, dict):
            self.kill()
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

    def _send(self, msg: dict, deadline: float) -> None:
        assert self.sock is not None
        try:
            wire.send(self.sock, msg, deadline=deadline)
        except wire.WireTimeout:
            self.kill()
            raise RunnerDied("the notebook's process stopped reading its requests, so it was killed") from None
        except OSError as exc:
            self.kill()
            raise RunnerDied(f"the notebook's process is gone ({exc})") from None

    def _recv_reply(self, deadline: float, what: str, number: int) -> dict:
        """The reply to request ``number``, answering the student's calls of lent functions meanwhile.

        A reply that answers another request (a forged one, or a late one after an interrupt) means
        the conversation is out of step: the process is killed, and restarted by the caller.
        """
        while True:
            reply = self._recv(deadline, what)
            if "callback" in reply:
                answer = self.on_callback(reply) if self.on_callback else {
                    "error": {"type": "RuntimeError", "message": "no function was lent"}}
                self._send(answer, deadline)
                continue
            if reply.get("id") != number:
                self.kill()
                raise RunnerDied(f"the notebook's process broke the protocol while {what} "
                                 "(an answer to another request)")
            return reply

    def request(self, msg: dict, timeout: float, what: str) -> dict:
        """Send ``msg``; wait at most ``timeout`` s in all; on timeout interrupt, then kill. Returns the reply."""
        if self.sock is None:
            raise RunnerDied("the notebook's process is not running")
        deadline = time.monotonic() + max(timeout, 0.01)
        self.in_request += 1
        try:
            return self._request(msg, deadline, timeout, what)
        finally:
            self.in_request -= 1

    def _request(self, msg: dict, deadline: float, timeout: float, what: str) -> dict:
        self.requests += 1
        number = msg["id"] = self.requests
        self._send(msg, deadline)
        try:
            return self._recv_reply(deadline, what, number)
        except TimeoutError:
            self.interrupt()
            try:
                reply = self._recv_reply(time.monotonic() + 5.0, what, number)
            except TimeoutError:
                self.kill()
                raise RunnerDied(
                    f"{what} ran past the {timeout:.0f} s limit and ignored the interrupt, so it was killed"
                ) from None
            error = reply.get("error") or {}
            if "KeyboardInterrupt" in (error.get("type"), error.get("ename")):
                reply["timed_out"] = True
            return reply


# -- the student's objects, seen from here ----------------------------------------------------------
def _walk_tensors(value: Any, depth: int = 0) -> list:
    """The tensors in ``value`` in the order runner.py's ``_tensors`` walks the decoded copy."""
    torch = sys.modules.get("torch")
    if torch is None or depth > 4:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _walk_tensors(v, depth + 1)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _walk_tensors(v, depth + 1)]
    return []


class Remote:
    """The student's namespace as seen from the grader: every object is a value or a :class:`Proxy`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.proxies: weakref.WeakValueDictionary[int, Proxy] = weakref.WeakValueDictionary()
        self.deadline = float("inf")
        self.calls = 0
        # Attribute reads are cached until the student's code next runs (a call, an operator, a cell, a write):
        # only then can attributes change.
        self.attributes: dict[tuple[int, str], Any] = {}
        # Functions of the test (a loss to differentiate, say) lent to the student's code, by number.
        self.lent: list[Any] = []
        self.to_free: list[int] = []
        self.stderr: list[str] = []  # what the student's code wrote to stderr during the current test
        # A name or attribute lookup that could not be answered (the test's time ran out, the process
        # ended). The lookup itself raises KeyError or AttributeError, so that whoever asked through
        # Python's protocols (pytest reading __tracebackhide__ from a frame's globals, hasattr, getattr
        # with a default) sees a missing name, never the grader's exceptions; the session then raises
        # this failure as the test cell's result.
        self.failure: BaseException | None = None
        sandbox.on_callback = self._answer_callback

    def keep_failure(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc

    def take_failure(self) -> BaseException | None:
        failure, self.failure = self.failure, None
        return failure

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
            value = function(*args, **{str(k): v for k, v in kwargs.items()})
            after = [[i, self._encode(a)] for i, a in enumerate(args) if type(a) is np.ndarray]
            after += [[k, self._encode(a)] for k, a in kwargs.items() if type(a) is np.ndarray]
            return {"value": self._encode(value), "arrays_after": after}
        except (RunnerDied, CellTimeout):
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the student's code as its exception
            return {"error": {"type": type(exc).__name__, "message": str(exc)[:500]}}

    def reset(self) -> None:
        self.proxies.clear()
        self.attributes.clear()
        self.to_free.clear()

    def _resolve(self, data: dict) -> Any:
        try:
            n = int(data["__ref__"])
        except (KeyError, TypeError, ValueError):
            raise wire.WireError("malformed reference") from None
        proxy = self.proxies.get(n)
        if proxy is None:
            mro = data.get("mro")
            proxy = Proxy(self, n, boundary.keep_text(data.get("type", "?"), 200), bool(data.get("callable")),
                          boundary.keep_text(data.get("name", ""), 100),
                          tuple(boundary.keep_text(m, 200) for m in mro[:30]) if isinstance(mro, list) else ())
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

    def forget(self, ref: int) -> None:
        """A proxy died: the runner may drop its object with the next request."""
        if len(self.to_free) < 10_000:
            self.to_free.append(ref)

    def ask(self, msg: dict, what: str, full: bool = False) -> Any:
        self.calls += 1
        if msg["op"] not in ("getattr", "lookup"):
            self.attributes.clear()
        if self.to_free:
            msg["free"], self.to_free = self.to_free, []
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise CellTimeout(f"the time limit for this test ran out before {what}")
        reply = self.sandbox.request(msg, remaining, what)
        if reply.get("timed_out"):
            raise CellTimeout(f"{what} ran past the time limit for this test and was interrupted")
        self._relay_output(reply)
        if "error" in reply:
            raise _remote_exception(reply["error"] if isinstance(reply["error"], dict) else {})
        try:
            value = wire.decode(reply.get("value"), self._resolve)
            return {"value": value, **{k: reply.get(k) for k in ("arrays_after", "graph")}} if full else value
        except (wire.WireError, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise RemoteError(f"the student's process sent data the grader cannot read ({exc})") from None

    def _relay_output(self, reply: dict) -> None:
        """What the student's code printed or warned while the test asked it something: as if it ran here."""
        limit = self.sandbox.limits.output_kb * 1024
        if reply.get("out"):
            sys.stdout.write(boundary.keep_output(reply["out"], limit))
        if reply.get("err") and sum(map(len, self.stderr)) < limit:
            self.stderr.append(boundary.keep_output(reply["err"], limit))
        caught = reply.get("warnings")
        for item in caught[:20] if isinstance(caught, list) else []:
            if isinstance(item, list) and len(item) == 4:
                category = _WARNINGS.get(str(item[0]), StudentWarning)
                message = boundary.keep_text(item[1], 500)
                warnings.warn_explicit(message, category, "<student's code>", item[3] if isinstance(item[3], int)
                                       else 0, module="student")

    def lookup(self, name: str) -> Any:
        return self.ask({"op": "lookup", "name": name}, f"looking up {name}")


class Proxy:
    """A student's object that stays in the sandbox. Identity and equality are the grader's own."""

    __slots__ = ("_remote", "_ref", "_type", "_callable", "_name", "_mro", "__weakref__")

    def __init__(self, remote: Remote, ref: int, type_name: str, is_callable: bool, name: str = "",
                 mro: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "_mro", mro)
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_callable", is_callable)
        object.__setattr__(self, "_name", name)
        weakref.finalize(self, remote.forget, ref)

    @property
    def __name__(self) -> str:  # noqa: PLW3201 - a function's name, as the student's process gave it
        name = object.__getattribute__(self, "_name")
        if not name:
            raise AttributeError("__name__")
        return name

    def _ask(self, op: str, what: str, **fields: Any) -> Any:
        remote = object.__getattribute__(self, "_remote")
        return remote.ask({"op": op, "target": {"__ref__": object.__getattribute__(self, "_ref")}, **fields}, what)

    def _label(self) -> str:
        return object.__getattribute__(self, "_type").rsplit(".", 1)[-1]

    def _gd_type_names(self) -> tuple[str, ...]:
        """The qualified names of the student's object's class and its bases (for ``checks.is_a``)."""
        return object.__getattribute__(self, "_mro")

    def _gd_build(self, factory: str, args: tuple, kwargs: dict) -> Any:
        """``factory(*args, **kwargs)`` made in the student's process, beside this object (see ``checks.beside``)."""
        remote = object.__getattribute__(self, "_remote")
        return remote.ask({"op": "build", "factory": factory, "args": remote._encode(list(args)),
                           "kwargs": remote._encode(dict(kwargs))}, f"building {factory.rsplit('.', 1)[-1]}")

    def _gd_read_path(self, *steps: Any) -> Any:
        """``self.a[k].b`` for steps ('a', k, 'b'): followed in the student's process in one request.

        The identity checks use it: the student's own link is followed, not the grader's idea of
        which object a reference number stands for.
        """
        remote = object.__getattribute__(self, "_remote")
        encoded = [["attr", s] if isinstance(s, str) else ["item", remote._encode(s)] for s in steps]
        return self._ask("path", "following " + ".".join(map(str, steps)), steps=encoded)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        remote = object.__getattribute__(self, "_remote")
        key = (object.__getattribute__(self, "_ref"), name)
        if key in remote.attributes:
            return remote.attributes[key]
        try:
            value = self._ask("getattr", f"reading .{name}", name=name)
        except (CellTimeout, RunnerDied, TimeoutError) as exc:
            remote.keep_failure(exc)  # hasattr() and getattr(..., default) see a missing attribute
            raise AttributeError(name) from None
        remote.attributes[key] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        remote = object.__getattribute__(self, "_remote")
        self._ask("setattr", f"setting .{name}", name=name, value=remote._encode(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        remote = object.__getattribute__(self, "_remote")
        name = object.__getattribute__(self, "_name") or self._label()
        torch = sys.modules.get("torch")
        grad = bool(torch.is_grad_enabled()) if torch is not None else False
        reply = remote.ask({"op": "call", "target": {"__ref__": object.__getattribute__(self, "_ref")},
                            "args": remote._encode(list(args)), "kwargs": remote._encode(dict(kwargs)),
                            "grad": grad}, f"calling {name}", full=True)
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
        value = reply["value"]
        graph = reply.get("graph")
        if graph and grad and isinstance(graph, dict):
            value = _attach_graph(remote, graph, value, list(args), dict(kwargs))
        return value

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


# -- autograd through the student's code ------------------------------------------------------------
def _attach_graph(remote: Remote, graph: dict, value: Any, args: list, kwargs: dict) -> Any:
    """Connect the tensors a student's call returned to the grader's own autograd graph.

    The runner kept the call's graph; a backward here asks the runner for the gradients of the
    call's inputs (its parameters get theirs there, as they would in one process) and hands
    them to the grader's input tensors.
    """
    import torch

    outputs = _walk_tensors(value)
    try:
        wanted = [int(i) for i in graph.get("outputs", [])]
        number = int(graph["id"])
    except (TypeError, ValueError, KeyError):
        return value
    if not outputs or any(not 0 <= i < len(outputs) for i in wanted) or not wanted:
        return value
    leaves = [t for t in _walk_tensors(args) + _walk_tensors(kwargs) if t.requires_grad]
    anchor = torch.zeros((), requires_grad=True)  # so that outputs need grad even when only parameters do
    link = _GraphLink(remote, number, [outputs[i] for i in wanted], leaves)
    linked = _RemoteCall.apply(link, anchor, *leaves)
    replacement = dict(zip(wanted, linked))

    def rebuild(v: Any, counter: list[int], depth: int = 0) -> Any:
        if isinstance(v, torch.Tensor):
            i = counter[0]
            counter[0] += 1
            return replacement.get(i, v)
        if depth <= 4 and isinstance(v, (list, tuple)):
            items = [rebuild(x, counter, depth + 1) for x in v]
            return items if isinstance(v, list) else tuple(items)
        if depth <= 4 and isinstance(v, dict):
            return {k: rebuild(x, counter, depth + 1) for k, x in v.items()}
        return v

    return rebuild(value, [0])


class _GraphLink:
    def __init__(self, remote: Remote, number: int, outputs: list, leaves: list) -> None:
        self.remote, self.number, self.outputs, self.leaves = remote, number, outputs, leaves


def _remote_call_class():
    import torch

    class RemoteCall(torch.autograd.Function):
        """Outputs computed by the student's process; their backward runs there too."""

        @staticmethod
        def forward(ctx, link, anchor, *leaves):  # noqa: ARG004 - leaves only connect the graph
            ctx.link = link
            return tuple(o.detach().clone() for o in link.outputs)

        @staticmethod
        def backward(ctx, *grad_outputs):
            link = ctx.link
            grads = link.remote.ask({"op": "backward", "graph": link.number,
                                     "grads": link.remote._encode([g.detach() for g in grad_outputs])},
                                    "running backward through the student's code")
            if not isinstance(grads, list) or len(grads) != len(link.leaves):
                raise RemoteError("the student's process sent gradients that do not match the inputs")
            checked = []
            for g, leaf in zip(grads, link.leaves):
                if not isinstance(g, torch.Tensor) or g.shape != leaf.shape:
                    raise RemoteError("the student's process sent a gradient of the wrong shape")
                checked.append(g.detach().to(leaf.dtype))
            return (None, None, *checked)

    return RemoteCall


class _LazyRemoteCall:
    cls = None

    def apply(self, *args):
        if _LazyRemoteCall.cls is None:
            _LazyRemoteCall.cls = _remote_call_class()
        return _LazyRemoteCall.cls.apply(*args)


_RemoteCall = _LazyRemoteCall()


class RemoteGlobals(dict):
    """Globals of the test cells: the set-up cell's and the tests' own names first, builtins next,
    and only then the student's namespace (for the student's answers)."""

    def __init__(self, remote: Remote, own: dict) -> None:
        super().__init__(own)
        self.remote = remote

    def __missing__(self, name: str) -> Any:
        if not isinstance(name, str) or hasattr(builtins, name) or (name.startswith("__") and name.endswith("__")):
            raise KeyError(name)  # builtins: the interpreter falls back to them; dunders are never the student's
        try:
            return self.remote.lookup(name)
        except NameError:
            raise KeyError(name) from None
        except (CellTimeout, RunnerDied, TimeoutError) as exc:
            self.remote.keep_failure(exc)
            raise KeyError(name) from None
