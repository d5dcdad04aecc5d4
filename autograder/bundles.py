"""Grading a class in shards: which submissions a shard grades, the bundle it writes, and the merge.

    bash course.sh grade all --shard 3/8 --bundle /shared/bundles/shard-{shard}   # on eight nodes
    bash course.sh grade all --shard 8 --bundle ...    # the index from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID
    bash course.sh grade merge /shared/bundles/shard-*                          # once, where the course lives

A shard grades the (student, assignment) pairs whose hash falls to it (:func:`shard_of`: the same pair always
falls to the same shard, whatever else the submissions folder holds), with the local pool, and writes a
self-contained bundle (:func:`write_bundle`): one result per pair, the autograded notebooks, the logs, and a
manifest naming the course, the release of each notebook (a hash of the instructor's source, hidden tests
included) and the grader's version (a hash of its code and of the package's checks). It touches nothing
shared: not the gradebook, not ``autograder/reports``.

:func:`merge` is the one writer. It refuses every bundle of another course, of another release of a notebook,
or made by another version of the grader (and then merges nothing), records each result in the course
gradebook as a local run would, puts the autograded notebooks and logs where a local run puts them, and
rebuilds ``grades.csv``, ``results.json`` and ``report.html`` for the whole class. Merging a bundle again
changes nothing; a shard graded again replaces its earlier results. Students of a shard that has not been
merged yet are reported as not graded, with the shard to run, never as missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote, unquote

FORMAT = "goingdeeper.grading-bundle/1"
SHARD_ENV = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")  # a Kubernetes Indexed Job, a Slurm array job


class BundleError(Exception):
    """A bundle that cannot be merged into this course; the message says why and what to do."""


class ShardError(ValueError):
    """A --shard argument that cannot be used; the message says what to write instead."""


# -- which shard grades what ----------------------------------------------------------------------------------
def parse_shard(text: str, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N; ``"N"`` takes i from the array job's environment (:data:`SHARD_ENV`)."""
    env = os.environ if environ is None else environ
    match = re.fullmatch(r"\s*(?:(\d+)\s*/\s*)?(\d+)\s*", text or "")
    if not match:
        raise ShardError(f"--shard {text!r}: write i/N (shard i of N, counted from 0), or N alone inside an array "
                         f"job ({' or '.join(SHARD_ENV)} gives i)")
    total = int(match.group(2))
    if total < 1:
        raise ShardError(f"--shard {text!r}: N must be at least 1")
    if match.group(1) is not None:
        index = int(match.group(1))
    else:
        name = next((n for n in SHARD_ENV if env.get(n, "").strip()), None)
        if name is None:
            raise ShardError(f"--shard {text!r} gives no index and neither {' nor '.join(SHARD_ENV)} is set: write "
                             f"--shard i/{total}, or run it as a Kubernetes Indexed Job or a Slurm array job")
        try:
            index = int(env[name])
        except ValueError:
            raise ShardError(f"{name}={env[name]!r} is not a shard index") from None
        # The task id is the shard itself (the templates number the array from 0), also when one task is run
        # again alone (sbatch --array=5 sets SLURM_ARRAY_TASK_MIN=5 too: it is not subtracted).
    if not 0 <= index < total:
        raise ShardError(f"shard index {index} is outside 0..{total - 1} (--shard {text!r})")
    return index, total


def shard_of(student: str, assignment: str, total: int) -> int:
    """The shard that grades ``student``'s ``assignment``: a hash, so that it never depends on who else is there."""
    digest = hashlib.sha256(f"{assignment}\0{student}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


# -- what makes two bundles comparable ------------------------------------------------------------------------------
def course_id(root: Path) -> str:
    """nbgrader's course id from ``autograder/nbgrader_config.py``."""
    text = (root / "autograder" / "nbgrader_config.py").read_text(encoding="utf-8")
    match = re.search(r"course_id\s*=\s*[\"']([^\"']+)[\"']", text)
    return match.group(1) if match else "?"


def release_of(root: Path, assignment: str) -> str:
    """The release of an assignment: a hash of its source notebooks' cells (sources, types and nbgrader
    metadata: answers, tests and hidden tests), not of outputs or other metadata a save may change."""
    h = hashlib.sha256()
    for path in sorted((root / "solutions" / assignment).glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [[c.get("cell_type"), "".join(c.get("source", "")), c.get("metadata", {}).get("nbgrader", {})]
                 for c in nb.get("cells", [])]
        h.update(path.name.encode() + b"\0" + json.dumps(cells, sort_keys=True).encode() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def grader_version() -> str:
    """The grader's version: a hash of its own code (this folder's), of the references and of the package whose
    checks the test cells call (the copy this process imports). Read once per process: the Dask driver sends it
    with every submission and each worker compares it."""
    import goingdeeper

    here, package = Path(__file__).resolve().parent, Path(goingdeeper.__file__).resolve().parent
    files = [*here.glob("*.py"), *(here / "sandbox").glob("*.py"), *(here / "reference").glob("*.py"),
             *package.glob("*.py"), *(p for p in (package / "data").glob("*") if p.is_file())]
    h = hashlib.sha256()
    for path in sorted(p for p in files if p.name != "nbgrader_config.py"):
        h.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def manifest(root: Path, assignments: list[str], shard: tuple[int, int], students: dict[str, list[str]]) -> dict:
    return {"format": FORMAT, "course": course_id(root), "grader": grader_version(),
            "releases": {a: release_of(root, a) for a in assignments}, "shard": list(shard),
            "students": {a: sorted(s) for a, s in students.items()}, "host": socket.gethostname(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "created_unix": time.time()}


# -- a shard's bundle -------------------------------------------------------------------------------------------
def bundle_paths(bundle: Path, student: str, assignment: str) -> tuple[Path, Path]:
    """(autograded folder, log file) of one submission inside a bundle."""
    return bundle / "autograded" / student / assignment, bundle / "logs" / assignment / f"{student}.log"


def write_bundle(bundle: Path, info: dict, results: list) -> None:
    """The shard's results and manifest (its autograded notebooks and logs are already in ``bundle``). The
    manifest is written last: a bundle without one is unfinished, and merge says so."""
    for r in results:
        folder = bundle / "results" / r.assignment
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{quote(r.student, safe='')}.json"
        path.with_suffix(".tmp").write_text(json.dumps(asdict(r)), encoding="utf-8")
        os.replace(path.with_suffix(".tmp"), path)
    info = dict(info, count=len(results))
    (bundle / "bundle.tmp").write_text(json.dumps(info, indent=1), encoding="utf-8")
    os.replace(bundle / "bundle.tmp", bundle / "bundle.json")


def prepare_bundle(bundle: Path, shard: tuple[int, int]) -> None:
    """An empty folder for shard ``shard``'s bundle, marked with the shard (a crashed run leaves the mark). An
    earlier bundle of the same shard is replaced; one of another shard, or files that are not a bundle, never."""
    if bundle.is_symlink() or (bundle.exists() and not bundle.is_dir()):
        raise BundleError(f"--bundle {bundle} is not a folder")
    if bundle.is_dir() and any(bundle.iterdir()):
        mark = _shard_mark(bundle)
        if mark is None:
            raise BundleError(f"--bundle {bundle} holds files that are not a grading bundle: name an empty or new "
                              "folder")
        if mark != list(shard):
            raise BundleError(f"--bundle {bundle} holds the bundle of shard {mark[0]}/{mark[1]}: give each shard a "
                              "folder of its own (put {shard} in the path: --bundle DIR/shard-{shard})")
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "shard.json").write_text(json.dumps({"shard": list(shard)}), encoding="utf-8")


def _shard_mark(bundle: Path) -> list[int] | None:
    for name in ("bundle.json", "shard.json"):
        try:
            shard = json.loads((bundle / name).read_text(encoding="utf-8")).get("shard")
            return [int(shard[0]), int(shard[1])]
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            continue
    return None


class Unfinished(BundleError):
    """A shard's folder without a manifest: its run did not finish (``shard`` is what its mark says, if any)."""

    def __init__(self, message: str, shard: list[int] | None) -> None:
        super().__init__(message)
        self.shard = shard


def read_bundle(path: Path, root: Path) -> dict:
    """The manifest of the bundle at ``path``, checked against this course; raises :class:`BundleError`."""
    try:
        info = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        mark = _shard_mark(path) if path.is_dir() else None
        if mark is None:
            raise BundleError(f"{path}: not a grading bundle (no bundle.json)") from None
        raise Unfinished(f"{path}: shard {mark[0]}/{mark[1]} has not finished (no bundle.json): grade it again with "
                         f"--shard {mark[0]}/{mark[1]}", mark) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: its bundle.json cannot be read ({exc}): grade the shard again") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise BundleError(f"{path}: not a grading bundle of this grader (format {info.get('format')!r}, "
                          f"expected {FORMAT!r})")
    here = course_id(root)
    if info.get("course") != here:
        raise BundleError(f"{path}: graded for the course {info.get('course')!r}, not this one ({here!r})")
    version = grader_version()
    if info.get("grader") != version:
        raise BundleError(f"{path}: made by another version of the grader ({info.get('grader')}; this course's is "
                          f"{version}): grade shard {_shard_text(info)} again with this course's grader")
    for assignment, release in dict(info.get("releases", {})).items():
        if not (root / "solutions" / assignment).is_dir():
            raise BundleError(f"{path}: grades {assignment}, which this course does not have")
        mine = release_of(root, assignment)
        if release != mine:
            raise BundleError(f"{path}: graded another release of {assignment} (its notebook or tests differ: "
                              f"{release}, here {mine}): grade shard {_shard_text(info)} again with this release")
    return info


def _shard_text(info: dict) -> str:
    shard = info.get("shard") or ["?", "?"]
    return f"{shard[0]}/{shard[1]}"


def bundle_results(path: Path, load) -> list:
    """The results a bundle holds (``load``: grade's reader of one result file)."""
    out = []
    for file in sorted((path / "results").glob("*/*.json")):
        r = load(file)
        if (r is not None and unquote(file.stem) == r.student and file.parent.name == r.assignment
                and r.student and "/" not in r.student and "\\" not in r.student and not r.student.startswith(".")):
            out.append(r)
    return out


def copy_outputs(bundle: Path, root: Path, result) -> None:
    """A result's autograded notebook and log, from the bundle to where a local run puts them (replacing)."""
    autograded, log = bundle_paths(bundle, result.student, result.assignment)
    target = root / "autograder" / "autograded" / result.student / result.assignment
    if autograded.is_dir() and not autograded.is_symlink():
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(autograded, target, symlinks=False)
    elif result.status in ("ungradable", "misnamed") and target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # as a local run does: no earlier autograded notebook outlives a failed regrade
    if log.is_file() and not log.is_symlink():
        out = root / "autograder" / "reports" / result.assignment / "logs" / f"{result.student}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, out)


# -- deployment templates (autograder/deploy/) -------------------------------------------------------------------
TEMPLATES = {"k8s": "grade-indexed-job.yaml", "slurm": "grade-array.sbatch"}


def render(kind: str, values: dict[str, object]) -> str:
    """The template of ``kind`` (k8s, slurm) with its ``{{NAME}}`` placeholders filled from ``values``."""
    if kind not in TEMPLATES:
        raise ValueError(f"no template {kind!r}: use one of {', '.join(TEMPLATES)}")
    text = (Path(__file__).resolve().parent / "deploy" / TEMPLATES[kind]).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    left = sorted(set(re.findall(r"\{\{([A-Z_]+)\}\}", text)))
    if left:
        raise ValueError(f"the {kind} template still needs {', '.join(left)}")
    return text


def deploy_values(assignment: str, shards: int, bundles_dir: str, checkout: Path, course: Path, workers: int,
                  image: str = "", memory: str = "", time_limit: str = "06:00:00", submissions_claim: str = "",
                  bundles_claim: str = "", kind: str = "k8s") -> dict[str, object]:
    slug = re.sub(r"[^a-z0-9-]+", "-", f"grade-{assignment}".lower())[:52].strip("-")
    for label, value in (("--bundles", bundles_dir), ("--checkout", checkout), ("--course", course),
                         ("--image", image)):
        if not re.fullmatch(r"[A-Za-z0-9_./:@+-]*", str(value)):
            raise ValueError(f"{label} {value!r}: a path on the cluster's nodes may hold only letters, digits and "
                             "_ . / : @ + - (the job files carry it unquoted): choose one without spaces")
    return {"JOB": slug, "SHARDS": shards, "LAST": shards - 1, "ASSIGNMENT": assignment, "CHECKOUT": checkout,
            "COURSE": course, "BUNDLES": bundles_dir, "WORKERS": workers,
            # each submission may use Limits.memory_mb (4 GiB) plus the grader's own 1.5: no neighbour's use
            # pushes a node's grading into an out-of-memory kill that would read as the student's
            "MEMORY": memory or (f"{6 * workers}Gi" if kind == "k8s" else f"{6 * workers}G"), "IMAGE": image or "REPLACE-WITH-YOUR-IMAGE",
            "TIME": time_limit, "SUBMISSIONS_CLAIM": submissions_claim or "grading-submissions",
            "BUNDLES_CLAIM": bundles_claim or "grading-bundles"}
