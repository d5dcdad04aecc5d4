"""The student edition: what students receive (``bash course.sh student-edition [DIR]``).

``DIR`` (default ``build/student-edition/``) gets the folder ``going-deeper/`` and the zip
``going-deeper.zip`` of it (entries sorted, fixed timestamps and permissions, so the same sources make
the same zip). The folder holds

* ``notebooks/``: the release, byte for byte;
* ``goingdeeper/``: the helper package without the instructors' module (:data:`INSTRUCTOR_MODULES`: the loader
  of the reference implementations); the instructor's room ``instructor/`` (the course pipeline, nbgrader
  scratch courses, these build tools) and the grader's ``autograder/`` never go in;
* the set-up files (:data:`SETUP_FILES`), the lab configuration ``jupyter-config/`` and a README for
  students (from ``editions/student/README.md.j2``);
* ``.student-edition``, which tells ``course.sh`` that the instructors' commands are not available.

Nothing from ``autograder/``, ``solutions/``, ``tests/`` or ``benchmarks/`` goes in, and the build
fails if any file that would go in holds instructor-only text (:data:`INSTRUCTOR_MARKERS`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from instructor.course import ROOT, assignments, notebook_problems, release_differences

__all__ = [
    "EDITION_NAME",
    "INSTRUCTOR_MARKERS",
    "INSTRUCTOR_MODULES",
    "NotebookInfo",
    "build_student_edition",
    "edition_files",
    "instructor_material",
    "notebook_info",
    "source_version",
    "write_zip",
    "zip_timestamp",
]

EDITION_NAME = "going-deeper"
MARKER = ".student-edition"
#: Modules of ``goingdeeper/`` that only instructors use; the edition leaves them out. (The rest of the instructor's
#: code lives in ``instructor/``, which the edition never copies.)
INSTRUCTOR_MODULES = frozenset({"grading.py"})
#: Files copied as they are, relative to the course root.
SETUP_FILES = ("course.sh", "requirements.txt", "environment.yml", "pyproject.toml", "data/README.md")
#: Text that only instructor material holds: nbgrader's solution and hidden-test markers, and the
#: loader of the reference implementations.
INSTRUCTOR_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "load_reference")
#: Zip entries carry this timestamp where nothing better is known (the earliest a zip can hold); see
#: :func:`zip_timestamp`.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class NotebookInfo:
    """An assignment's notebook as the README and the reader's index show it."""

    id: str
    title: str
    summary: str  # the first paragraph after the title (markdown)


def notebook_info(path: Path) -> NotebookInfo:
    """Title (the first heading of the first markdown cell) and first paragraph of a notebook."""
    nb = nbformat.read(path, as_version=4)
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title, paragraphs = path.stem, []
    for block in first.strip().split("\n\n"):
        if block.lstrip().startswith("#") and title == path.stem and not paragraphs:
            title = block.lstrip("# ").strip()
        elif block.strip():
            paragraphs.append(block.strip())
    return NotebookInfo(path.parent.name, title, paragraphs[0] if paragraphs else "")


def _files_under(folder: Path, root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not _SKIPPED_PARTS & set(p.parts) and p.suffix != ".pyc"
    }


def edition_files(root: Path = ROOT) -> dict[str, Path]:
    """{path in the edition: source file} for every file copied into the edition (the README is generated)."""
    files: dict[str, Path] = {}
    for name in SETUP_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} is missing: the student edition needs it")
        files[name] = root / name
    files.update(_files_under(root / "jupyter-config", root))
    files.update({name: path for name, path in _files_under(root / "goingdeeper", root).items()
                  if not (path.parent == root / "goingdeeper" and path.name in INSTRUCTOR_MODULES)})
    for assignment in assignments(root):
        folder = root / "notebooks" / assignment
        if not folder.is_dir():
            raise FileNotFoundError(f"notebooks/{assignment} is missing: run `bash course.sh release` first")
        files.update(_files_under(folder, root))
    return files


def instructor_material(files: dict[str, bytes]) -> list[str]:
    """Why each of ``files`` ({name: content}) must not reach students; empty when all are clean."""
    problems = []
    for name, content in sorted(files.items()):
        parts = Path(name).parts
        if parts[0] in ("autograder", "instructor", "solutions", "tests", "benchmarks"):
            problems.append(f"{name}: from {parts[0]}/, which is for instructors")
        if parts[0] == "goingdeeper" and len(parts) == 2 and parts[1] in INSTRUCTOR_MODULES:
            problems.append(f"{name}: an instructors' module")
        for marker in INSTRUCTOR_MARKERS:
            if marker.encode() in content:
                problems.append(f"{name}: contains {marker!r}")
    return problems


def source_version(root: Path = ROOT) -> str | None:
    """``git describe --always --dirty`` of the course repository, or None outside a git checkout."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _provenance(root: Path) -> str:
    version = source_version(root)
    return f"Built from the course repository at `{version}`." if version else "Built from the course repository."


def _readme(root: Path, provenance: str) -> str:
    import jinja2

    template = (root / "editions" / "student" / "README.md.j2").read_text(encoding="utf-8")
    notebooks = [notebook_info(root / "notebooks" / a / f"{a}.ipynb") for a in assignments(root)]
    return jinja2.Template(template, keep_trailing_newline=True).render(notebooks=notebooks, provenance=provenance)


def zip_timestamp(root: Path = ROOT) -> tuple[int, int, int, int, int, int]:
    """The date the zip's entries carry: ``SOURCE_DATE_EPOCH`` when set (the reproducible-builds convention),
    else the time of the course repository's last commit, else :data:`ZIP_TIMESTAMP`. The same sources give
    the same date, and unzipped files do not say "modified 46 years ago" (what 1980 looks like in a lab)."""
    import datetime
    import os

    seconds: str | None = os.environ.get("SOURCE_DATE_EPOCH")
    if not seconds:
        try:
            seconds = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=root, capture_output=True, text=True,
                                     check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            seconds = None
    try:
        when = datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc) if seconds else None
    except (ValueError, OverflowError, OSError):
        when = None
    if when is None or when.year < 1980:
        return ZIP_TIMESTAMP
    return (when.year, when.month, when.day, when.hour, when.minute, when.second - when.second % 2)  # zip: 2 s steps


def write_zip(folder: Path, zip_path: Path, timestamp: tuple[int, ...] = ZIP_TIMESTAMP) -> Path:
    """Zip ``folder`` as ``<folder name>/...`` with sorted entries, one timestamp and fixed permissions."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", timestamp)
            info.create_system = 3  # Unix, so that unzip restores the permissions below
            mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return zip_path


def _check_release(root: Path) -> None:
    problems = []
    for assignment in assignments(root):
        for path in sorted((root / "notebooks" / assignment).glob("*.ipynb")):
            problems += [f"{path.relative_to(root)}: {p}" for p in notebook_problems(nbformat.read(path, as_version=4))]
        problems += [f"notebooks/{assignment}/{name}: {'; '.join(diff)}"
                     for name, diff in release_differences(assignment).items()]
    if problems:
        raise SystemExit("The release is not ready to hand out (run `bash course.sh strip` and "
                         "`bash course.sh release`, then build again):\n  " + "\n  ".join(problems))


def build_student_edition(out_dir: Path, root: Path = ROOT, *, check_release: bool = True) -> tuple[Path, Path]:
    """Build the edition into ``out_dir/going-deeper/`` and ``out_dir/going-deeper.zip``; return both paths.

    With ``check_release`` (the default), first make sure that ``notebooks/`` is a fresh, clean
    release of ``solutions/``, so that students never get a stale notebook or one with outputs.
    """
    if check_release:
        _check_release(root)
    files = {name: path.read_bytes() for name, path in edition_files(root).items()}
    provenance = _provenance(root)
    files["README.md"] = _readme(root, provenance).encode()
    files[MARKER] = (
        "Going Deeper, student edition. " + provenance + "\n"
        "course.sh reads this file: the instructors' commands are not part of this edition.\n"
    ).encode()
    problems = instructor_material(files)
    if problems:
        raise SystemExit("Instructor material would reach students; nothing was written:\n  " + "\n  ".join(problems))

    out_dir.mkdir(parents=True, exist_ok=True)
    folder, zip_path = out_dir / EDITION_NAME, out_dir / f"{EDITION_NAME}.zip"
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise SystemExit(f"{folder} exists and is not a student edition: remove it or choose another DIR")
        shutil.rmtree(folder)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if name == "course.sh":
            target.chmod(0o755)
    return folder, write_zip(folder, zip_path, zip_timestamp(root))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh student-edition",
                                     description="Build what students receive: a folder and a zip of it.")
    parser.add_argument("dir", nargs="?", type=Path, default=ROOT / "build" / "student-edition",
                        help="output folder (default: build/student-edition/)")
    args = parser.parse_args(argv)
    folder, zip_path = build_student_edition(args.dir.resolve())
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    print(f"student edition: {folder} ({count} files) and {zip_path} ({zip_path.stat().st_size // 1024} KiB)")
    print("Hand out the zip, push the folder as its own repository, or release the notebooks with nbgrader's "
          "exchange (see README.md, 'Handing the course out').")
    return 0


if __name__ == "__main__":
    sys.exit(main())
