"""Grading on a Dask cluster: one task per submission, results back to this process, which alone writes.

    bash course.sh grade all --scheduler tcp://HOST:8786

Each Dask worker grades a submission exactly as a worker of the local pool does (``grade.grade_submission``:
the same sandbox, limits and user-id leasing, no network for the student's code), one submission at a time per
worker process, into a folder of its own; the autograded notebook and the log come back with the result, and
this process writes them, and the gradebook, where a local run does. A worker that dies mid-task has its
submission rescheduled by Dask on another worker (up to its ``distributed.scheduler.allowed-failures``, 3 by
default; then Dask gives up with KilledWorker, and this process submits it once more). A submission whose
grading fails twice is reported with both reasons: ungradable when the processes grading it died each time (as
a local worker that dies twice), a grader error (recorded for no one) otherwise. When the scheduler stops
answering, grading stops, and the submissions finished by then are recorded.

What a worker needs: this course checkout at the same path as here (it imports the grader from it and reads the
course's notebooks and gradebook), the submissions at the same path (a shared filesystem), bubblewrap with
unprivileged user namespaces, and the course's virtual environment with the ``cluster`` extra. Start workers
with one thread each (``dask worker ADDRESS --nthreads 1 --nworkers <cores>``): a worker process grades one
submission at a time whatever its threads.
"""

from __future__ import annotations

import uuid
from pathlib import Path

AUTOGRADER = str(Path(__file__).resolve().parent)
DASK_PIN = "dask[distributed]==2026.8.0"


class ClusterError(Exception):
    """The cluster cannot be used (Dask missing, scheduler unreachable); the message says what to do."""


# -- on a worker ----------------------------------------------------------------------------------------------
def _worker_function():
    """The function a worker runs for one submission. Made here, nested, so that Dask sends it by value (a
    function of a module it would send by name, and the scheduler and workers could not import this one): it
    imports the grader from the course checkout it is given, which grades one submission at a time per worker
    process (one leased user id each)."""

    def grade_remote(fields: dict, autograder: str) -> dict:
        import socket
        import sys

        if autograder not in sys.path:
            sys.path.insert(0, autograder)
        import grade  # the worker's copy of the course's grader

        payload = grade.grade_in_cluster_worker(fields)
        payload["host"] = socket.gethostname()
        return payload

    return grade_remote


# -- here -----------------------------------------------------------------------------------------------------
def _client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(f"grading on a Dask cluster needs Dask: .venv/bin/pip install '{DASK_PIN}' (the course's "
                           "'cluster' extra), or grade here without --scheduler") from None
    try:
        return Client(address, timeout="30s")  # the default client: as_completed runs on its loop
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({exc}): check the address (tcp://HOST:8786) "
                           "and that `dask scheduler` runs there") from None


class ClusterStopped(ClusterError):
    """The cluster stopped answering (the scheduler went away, the client was closed): grading stops here."""


def _died(exc: BaseException) -> bool:
    """Whether the process grading a submission died under it (Dask's KilledWorker, or the worker's grading
    child breaking): the only failures that may make a submission ungradable."""
    return type(exc).__name__ in ("KilledWorker", "BrokenProcessPool")


def _describe(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return f"the workers grading it died ({exc})"
    return f"{type(exc).__name__}: {exc}"[:400]


def run_dask(tasks: list, address: str, done) -> list:
    """Grade ``tasks`` (grade.Task) on the cluster at ``address``; ``done(result, task)`` here, for each."""
    import grade
    from distributed import as_completed

    client = _client(address)
    if not client.scheduler_info().get("workers"):
        client.wait_for_workers(1, timeout=300)
    results = []
    work = _worker_function()
    try:
        def submit(task, reasons):
            key = f"grade-{task.assignment}-{uuid.uuid4().hex[:12]}"
            future = client.submit(work, grade.cluster_fields(task), AUTOGRADER, key=key, pure=False)
            pending[future] = (task, reasons)
            return future

        pending: dict = {}
        stream = as_completed([submit(t, []) for t in tasks])
        for future in stream:
            task, reasons = pending.pop(future)
            try:
                payload = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed grading is tried once more, then reported
                if "Cancelled" in type(exc).__name__ or getattr(client, "status", "running") != "running":
                    raise ClusterStopped(f"the cluster stopped answering ({type(exc).__name__}: {exc})") from None
                reasons = [*reasons, (_describe(exc), _died(exc))]
                if len(reasons) < 2:
                    stream.add(submit(task, reasons))
                    continue
                result = grade.cluster_failure(task, "its grading failed twice on the cluster: "
                                               + "; ".join(r for r, _ in reasons), all(d for _, d in reasons))
            else:
                result = grade.apply_cluster_payload(task, payload)  # an error here is the driver's: it stops
            results.append(result)
            done(result, task)
    finally:
        client.close()
    return results


def worker_count(address: str) -> int:
    """How many workers the scheduler at ``address`` has (for messages and tests)."""
    client = _client(address)
    try:
        return len(client.scheduler_info().get("workers", {}))
    finally:
        client.close()


__all__ = ["ClusterError", "ClusterStopped", "DASK_PIN", "run_dask", "worker_count"]
