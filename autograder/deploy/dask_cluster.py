"""Grade on a Dask cluster that dask-jobqueue (Slurm) or dask-kubernetes starts for you.

    .venv/bin/pip install 'dask[distributed]==2026.8.0' dask-jobqueue      # or dask-kubernetes
    .venv/bin/python autograder/deploy/dask_cluster.py slurm --workers 16 -- all

It starts the cluster, waits for the workers, and runs `bash course.sh grade ... --scheduler <its address>`.
Every worker needs this course checkout at the same path (a shared filesystem, or the image), bubblewrap with
unprivileged user namespaces, and the course's virtual environment; each worker process grades one submission
at a time, so start one process per core (processes=cores, one thread each). Without a scheduler of your own,
`dask scheduler` on one machine and `dask worker tcp://HOST:8786 --nthreads 1 --nworkers <cores>` on each of
the others does the same by hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def start(kind: str, workers: int, cores: int, memory: str, image: str):
    if kind == "slurm":
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(cores=cores, processes=cores, memory=memory, walltime="06:00:00",
                               python=str(CHECKOUT / ".venv" / "bin" / "python"),
                               worker_extra_args=["--nthreads", "1"])
        cluster.scale(jobs=max(1, workers // cores))
        return cluster
    if kind == "kubernetes":
        from dask_kubernetes.operator import KubeCluster

        return KubeCluster(name="goingdeeper-grading", image=image, n_workers=workers,
                           resources={"requests": {"cpu": "1", "memory": memory}},
                           worker_command=["dask", "worker", "--nthreads", "1"])
    raise SystemExit(f"unknown cluster kind {kind!r}: slurm or kubernetes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["slurm", "kubernetes"])
    ap.add_argument("--workers", type=int, default=8, help="worker processes (one submission at a time each)")
    ap.add_argument("--cores", type=int, default=4, help="slurm: cores per job (one worker process per core)")
    ap.add_argument("--memory", default="8GB", help="memory per job (slurm) or per worker (kubernetes)")
    ap.add_argument("--image", default="", help="kubernetes: an image holding the course checkout at the same path")
    ap.add_argument("grade_args", nargs="+", help="after --: what `bash course.sh grade` gets, e.g. all")
    args = ap.parse_args()
    from distributed import Client

    with start(args.kind, args.workers, args.cores, args.memory, args.image) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=600)
        command = ["bash", str(CHECKOUT / "course.sh"), "grade", *args.grade_args, "--scheduler", cluster.scheduler_address]
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
