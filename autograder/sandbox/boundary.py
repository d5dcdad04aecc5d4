"""The trust boundary of the grading command, on one page.

Three questions decide whether a submission can earn points it did not earn.
Each has its answer here, and nowhere else:

1. **What a cell is.** Decided from the gradebook and the instructor's source
   notebook, never from the submission: :func:`plan_cells` takes the locked
   and test cells (their source, type, position) from the course, and only
   the answers and the student's own extra cells from the submission. The
   student's nbgrader metadata is never read for what a cell is; a locked or
   test cell that the student moved, retyped, edited, duplicated, deleted or
   re-marked runs as the original, where the original stands.
2. **What the sandbox sees.** An allow-list (:data:`SYSTEM_PATHS`,
   :data:`ETC_FILES`, :func:`python_paths`, :data:`ENVIRONMENT`): the
   system's programs and libraries, the Python installation and the helper
   package, the data folder, read-only; a scratch copy of the submission (its
   regular files only, never a link) read-write; a minimal environment. Not
   the course, the gradebook, other submissions, any home or checkout.
3. **What may cross the wire** (``wire.py``): plain data by value and
   references to everything else, every message bounded in size, nesting,
   number of containers and strings, array bytes, and time (:data:`WIRE`).
   The grader bounds what it keeps of the runner's output and flags
   (:data:`KEEP`), and its own work on a test counts against the test's time.

Test cells run in the grader's own process, in a namespace that starts as the
instructor's set-up cell made it (:func:`trusted_namespace`); the student's
process is asked only for the names the tests look up that the set-up cell
and the tests themselves do not define.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import wire

SETUP_ID = "setup"

# -- 1. what a cell is ---------------------------------------------------------------------
SETUP, LOCKED, TEST, ANSWER, STUDENT = "setup", "locked", "test", "answer", "student"


@dataclass(frozen=True)
class CourseCell:
    """A cell of the instructor's notebook as the gradebook knows it."""

    grade_id: str
    source: str
    cell_type: str  # 'code' or 'markdown'
    role: str  # SETUP, LOCKED, TEST or ANSWER
    points: float = 0.0
    metadata: dict = field(default_factory=dict)  # the source notebook's nbgrader metadata


@dataclass
class PlannedCell:
    role: str
    grade_id: str | None
    cell: Any  # an nbformat NotebookNode, built here from trusted parts and the student's text
    points: float = 0.0  # the gradebook's points (test cells)


MAX_NOTEBOOK_BYTES = 100 * 1024 * 1024
MAX_CELLS = 5000
MAX_CELL_SOURCE = 1_000_000


class NotGradable(Exception):
    """The submission itself cannot be graded (not a notebook, too large, a link...): the message says why."""


def course_cells(source_nb: Any, gradebook_cells: dict[str, Any], grade_points: dict[str, float],
                 solution_ids: set[str]) -> list[CourseCell]:
    """The instructor's cells that carry a grade id, in the source notebook's order, with their roles.

    ``gradebook_cells``: grade id -> object with ``source``, ``locked`` and ``cell_type`` (nbgrader's
    SourceCell); ``grade_points``: grade id -> points of the graded cells; ``solution_ids``: answer cells.
    """
    cells = []
    for cell in source_nb.cells:
        gid = (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")
        if gid not in gradebook_cells:
            continue
        known = gradebook_cells[gid]
        if gid == SETUP_ID:
            role = SETUP
        elif gid in grade_points:
            role = TEST
        elif known.locked:
            role = LOCKED
        elif gid in solution_ids:
            role = ANSWER
        else:
            continue
        cells.append(CourseCell(gid, known.source, known.cell_type, role, grade_points.get(gid, 0.0),
                                dict(cell.metadata.get("nbgrader", {}))))
    return cells


def read_submission(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The cells of a submitted notebook, read without following links and without trusting its shape.

    Raises NotGradable with the reason when the file is a link, not a regular file, too large,
    not JSON, or has no list of cells. A notebook that is not UTF-8 (an editor saved it as Latin-1)
    is read as Windows-1252 (or Latin-1), and ``notes`` says so.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise NotGradable(f"the submitted file cannot be opened ({exc.strerror}; links are not followed)") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotGradable("the submitted notebook is not a regular file")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise NotGradable(f"the notebook is {info.st_size / 2**20:.0f} MB, over the "
                              f"{MAX_NOTEBOOK_BYTES // 2**20} MB limit (clear its outputs)")
        raw = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write it, is no reason to fail
    except UnicodeDecodeError as exc:
        try:  # Windows editors save cp1252 (Latin-1 plus quotes and dashes); Latin-1 reads every byte
            text, encoding = raw.decode("cp1252"), "Windows-1252"
        except UnicodeDecodeError:
            text, encoding = raw.decode("latin-1"), "Latin-1"
        if notes is not None:
            notes.append(f"the notebook is not UTF-8 (byte {exc.start} is 0x{raw[exc.start]:02x}): it was read as "
                         f"{encoding}; check the text of its cells (Jupyter saves UTF-8)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise NotGradable("the file is not a readable notebook (not JSON)") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise NotGradable("the file is not a readable notebook (no list of cells)")
    if len(cells) > MAX_CELLS:
        raise NotGradable(f"the notebook has {len(cells)} cells, over the limit of {MAX_CELLS}")
    return [c for c in cells if isinstance(c, dict)]


def _text(value: Any) -> str:
    """A cell's source as nbformat allows it (a string or a list of strings), else empty."""
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    if not isinstance(value, str):
        return ""
    return clean_text(value[:MAX_CELL_SOURCE])


def clean_text(text: str) -> str:
    """Text that can be written anywhere: lone surrogates and NULs replaced."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _student_grade_id(cell: dict) -> str | None:
    meta = cell.get("metadata")
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
    return gid if isinstance(gid, str) and 0 < len(gid) <= 200 else None


def plan_cells(student_cells: list[dict], course: list[CourseCell], notes: list[str],
               without_hidden_tests=lambda s: s) -> list[PlannedCell]:
    """The notebook as it will be graded.

    The course's cells stand in the course's order, each as the gradebook has it (setup, locked
    and test cells) or with the student's text (answer cells, in the course's cell type). Every
    other cell of the student's runs where the student put it: right after the course cell that
    precedes it in the submission. Notes say what was changed and put back.
    """
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_raw_cell

    by_id = {c.grade_id: c for c in course}
    fixed = {c.grade_id for c in course if c.role != ANSWER}
    answers: dict[str, str] = {}
    extras: dict[str | None, list[dict]] = {}
    seen: list[str] = []
    anchor: str | None = None
    for cell in student_cells:
        gid = _student_grade_id(cell)
        kind = cell.get("cell_type")
        if gid in by_id and gid not in seen:
            seen.append(gid)
            anchor = gid
            known = by_id[gid]
            if kind != known.cell_type:
                notes.append(f"cell {gid} was turned into {str(kind)[:20]} (graded as the original {known.cell_type})")
            if gid in fixed:
                text = _text(cell.get("source")).strip()
                if text not in (known.source.strip(), without_hidden_tests(known.source).strip()):
                    notes.append(f"edited {'test' if known.role == TEST else 'locked'} cell {gid} (the original was graded)")
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if any(meta.get(k) != known.metadata.get(k) for k in ("solution", "grade", "locked")):
                    notes.append(f"the nbgrader metadata of cell {gid} was changed (ignored)")
            else:
                answers[gid] = _text(cell.get("source"))
            continue
        if gid in by_id:
            notes.append(f"duplicated cell {gid} (graded once)")
            if gid in fixed:
                continue
        extras.setdefault(anchor, []).append(cell)
    course_order = [c.grade_id for c in course if c.role != ANSWER]
    if [g for g in seen if g in fixed] != [g for g in course_order if g in seen]:
        notes.append("locked or test cells were moved (graded in the original order)")

    def student_cell(cell: dict):
        kind, text = cell.get("cell_type"), _text(cell.get("source"))
        if kind == "code":
            return new_code_cell(text)
        return new_raw_cell(text) if kind == "raw" else new_markdown_cell(text)

    planned = [PlannedCell(STUDENT, None, student_cell(c)) for c in extras.get(None, [])]
    for known in course:
        if known.role == ANSWER:
            if known.grade_id not in answers:
                notes.append(f"deleted answer cell {known.grade_id}")
                continue
            text = answers[known.grade_id]
        else:
            text = known.source
            if known.grade_id not in seen:
                notes.append(f"deleted cell {known.grade_id} (put back and graded)")
        maker = new_code_cell if known.cell_type == "code" else new_markdown_cell
        cell = maker(text, metadata={"nbgrader": dict(known.metadata)})
        planned.append(PlannedCell(known.role, known.grade_id, cell, known.points))
        planned += [PlannedCell(STUDENT, None, student_cell(c)) for c in extras.get(known.grade_id, [])]
    return planned


# -- 2. what the sandbox sees --------------------------------------------------------------
# Read-only: the system's programs and libraries (a link such as /bin -> usr/bin is recreated as a link).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys/devices/system/cpu")
# Read-only: the files of /etc that programs and libraries read (the loader, users, time zone, fonts).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
             "localtime", "timezone", "fonts", "mime.types", "os-release")
SANDBOX_ROOT = "/tmp/grading"  # the scratch folder inside the sandbox: grader/ (runner) and work/ (submission)


def python_paths(package_dir: Path) -> list[Path]:
    """Read-only: the interpreter and its standard library, the virtual environment, the helper package."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent.parent, package_dir.resolve()}
    return sorted(p for p in paths if p.exists())


def data_dir(root: Path) -> Path | None:
    """The read-only data folder the notebooks may load (GOINGDEEPER_DATA, else the course's data/)."""
    chosen = os.environ.get("GOINGDEEPER_DATA")
    path = Path(chosen).expanduser() if chosen else root / "data"
    return path.resolve() if path.is_dir() else None


# The whole environment of the student's process: nothing of the grader's is passed through.
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/tmp/home",  # the tmpfs: caches of IPython and matplotlib stay out of the submission's folder
    "TMPDIR": "/tmp",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",  # one thread: the grader runs submissions side by side
    "MKL_NUM_THREADS": "1",
    "NBGRADER_EXECUTION": "autograde",
}


def sandbox_environment(output_kb: int, data: Path | None, scratch: Path | None = None) -> dict[str, str]:
    """ENVIRONMENT, plus the output cap, the data folder and (without bubblewrap) the real scratch paths."""
    env = dict(ENVIRONMENT, GRADER_MAX_CELL_OUTPUT=str(output_kb * 1024))
    # The CPU kernels PyTorch may use (a setting, not a secret): the student's process computes as the grader's.
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "")
    if capability.isalnum() and len(capability) <= 20:
        env["ATEN_CPU_CAPABILITY"] = capability
    if data is not None:
        env["GOINGDEEPER_DATA"] = str(data)
    if scratch is not None:  # no bubblewrap: the scratch folder is where it really is
        env.update(HOME=str(scratch / "tmp" / "home"), TMPDIR=str(scratch / "tmp"),
                   MPLCONFIGDIR=str(scratch / "tmp" / "matplotlib"))
    return env


def copy_submission_files(src: Path, dst: Path, uid: int | None, max_bytes: int = 50 * 1024 * 1024,
                          max_files: int = 200) -> list[str]:
    """Copy the regular files directly in ``src`` into ``dst``; never a link, a FIFO, a device or a folder.

    Files are opened without following links and checked to be regular files after opening.
    Returns notes about what was left out.
    """
    notes = []
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as exc:
        return [f"the submission folder cannot be listed ({exc.strerror})"]
    copied = 0
    for entry in entries:
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            notes.append(f"left out {entry.name[:80]!r}: not a regular file")
            continue
        if copied >= max_files:
            notes.append("left out the files after the first 200")
            break
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            notes.append(f"left out {entry.name[:80]!r}: cannot be opened")
            continue
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
                notes.append(f"left out {entry.name[:80]!r}: not a regular file, or over {max_bytes // 2**20} MB")
                continue
            target = dst / entry.name
            with open(target, "xb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
        if uid is not None:
            os.chown(target, uid, uid)
        copied += 1
    return notes


# -- 3. what may cross the wire, and what the grader keeps ------------------------------------
WIRE = {
    "grader message bytes": wire.MAX_MESSAGE,
    "runner message bytes": wire.MAX_REPLY,
    "containers per message": wire.MAX_CONTAINERS,
    "strings per message": wire.MAX_STRINGS,
    "nesting depth": wire.MAX_DEPTH,
    "characters per string by value": wire.MAX_STRING,
    "array elements by value": wire.MAX_ITEMS,
    "array bytes by value per message": wire.ARRAY_BUDGET,
}
KEEP = {
    "flags per submission": 40,
    "characters per flag": 200,
    "notes per submission": 60,
    "characters of a reason": 1000,
}


def keep_text(text: Any, limit: int) -> str:
    """A string from the runner, as the grader keeps it: clean and at most ``limit`` characters."""
    return clean_text(str(text)[:limit])


def keep_output(text: Any, limit: int) -> str:
    """Output from the runner as the grader keeps it: at most ``limit`` characters, and a note of the rest."""
    text = str(text)
    if len(text) <= limit:
        return clean_text(text)
    return clean_text(text[:limit]) + f"\n[... {len(text) - limit} more characters of output dropped by the grader]\n"


def add_flag(flags: list[str], flag: Any) -> None:
    """Add one flag (deduplicated, bounded in length and number)."""
    text = keep_text(flag, KEEP["characters per flag"])
    if text and text not in flags and len(flags) < KEEP["flags per submission"]:
        flags.append(text)


def trusted_namespace(setup_source: str) -> dict[str, Any]:
    """The names a test cell starts from: the instructor's set-up cell, run here, in the grader."""
    import contextlib
    import io
    import warnings

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(setup_source, "<setup>", "exec"), namespace)  # noqa: S102 - the instructor's cell
    return namespace
