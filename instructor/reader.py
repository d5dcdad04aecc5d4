"""The reader's edition: the solved series as a static site that works offline (``bash course.sh site [DIR]``).

For every assignment, in lecture order, the solution notebook of ``solutions/`` is

1. made readable (:func:`reader_notebook`): nbgrader's ``### BEGIN/END SOLUTION`` marker lines go (the
   solution code stays: readers read the solved series), hidden tests go entirely, and so do nbgrader's
   metadata and checksums;
2. executed in a scratch folder (:func:`execute_notebook`) with ``GOINGDEEPER_STATIC=1``, so that the
   explorers draw static figures instead of widgets, and, with ``--fast``, with
   ``NBGRADER_EXECUTION=autograde`` as nbgrader grades, so that long runs shrink (the pages say so);
3. rendered to ``DIR/NN_topic.html`` with nbconvert's lab template less its CDN scripts, figures
   embedded, math typeset by the site's own copy of MathJax 2 (``DIR/mathjax/``, copied at build time
   from the PyPI package ``jupyter-server-mathjax``; HTML-CSS output with its STIX web fonts).

``DIR/index.html`` (default ``build/site/``) lists the notebooks with the first paragraph of each. The
site opens from disk (``file://``) with the network off. A notebook that fails does not stop the build:
the other pages are built, the index lists the failed ones as not built (each with its reason), and the
command says which failed and why, and exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import nbformat

from instructor.course import ROOT, SOLUTIONS
from instructor.editions import NotebookInfo, notebook_info, source_version

__all__ = [
    "DEFAULT_TIMEOUT",
    "BuildError",
    "SiteIncomplete",
    "build_site",
    "copy_mathjax",
    "execute_notebook",
    "reader_notebook",
    "render_page",
]

#: Seconds one notebook may run, all its cells together (``--timeout``).
DEFAULT_TIMEOUT = 1800
TEMPLATES = ROOT / "editions" / "site" / "templates"
#: What of MathJax 2 (from jupyter-server-mathjax) the site leaves out: the SVG output's font data (the
#: package ships no SVG output jax; the pages use HTML-CSS with the STIX web fonts).
MATHJAX_LEFT_OUT = ("jax/output/SVG",)
_SOLUTION_MARKER = re.compile(r"^\s*#+\s*(BEGIN|END) SOLUTION\s*$")


@dataclass(frozen=True)
class Page:
    """One notebook's page, as the index and the neighbours' navigation link to it."""

    info: NotebookInfo
    href: str

    @property
    def title(self) -> str:
        return self.info.title


class BuildError(RuntimeError):
    """A notebook failed or ran out of time while the site was built.

    ``reason`` says what went wrong in one line (the index lists a page that was not built with it);
    the message adds the details (the failing cell and its traceback).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or (message.strip().splitlines() or ["failed"])[0]


class SiteIncomplete(BuildError):
    """Some notebooks failed: the site holds every other page, and an index that lists the failed ones.

    ``failed`` maps each failed assignment to its one-line reason; ``index`` is the index page written.
    """

    def __init__(self, failed: dict[str, str], built: int, index: Path) -> None:
        self.failed = dict(failed)
        self.index = index
        lines = [f"{len(failed)} of {built + len(failed)} notebooks failed and have no page "
                 f"(the other pages and the index {index} were built):"]
        lines += [f"  {assignment}: {reason}" for assignment, reason in failed.items()]
        super().__init__("\n".join(lines), reason=f"{len(failed)} notebook(s) failed: {', '.join(failed)}")


def reader_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a solution notebook as readers get it: no solution markers, no hidden tests, no nbgrader metadata.

    The marker lines ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are removed and the code between
    them kept; ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` blocks are removed with their
    content (by nbgrader's own ``ClearHiddenTests``); code cells left empty are dropped; cell metadata
    ``nbgrader``, ``deletable`` and ``editable`` are dropped.
    """
    from nbgrader.preprocessors import ClearHiddenTests

    nb = nbformat.from_dict(nb)
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    cells = []
    for cell in nb.cells:
        for key in ("nbgrader", "deletable", "editable"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            lines = [line for line in cell.source.splitlines() if not _SOLUTION_MARKER.match(line)]
            cell.source = "\n".join(lines).rstrip()
            if not cell.source.strip():
                continue
        cells.append(cell)
    nb.cells = cells
    return nb


def execute_notebook(nb: nbformat.NotebookNode, workdir: Path, *, fast: bool = False,
                     timeout: float = DEFAULT_TIMEOUT, name: str = "notebook") -> nbformat.NotebookNode:
    """Run ``nb`` in ``workdir`` with the explorers static and, when ``fast``, as nbgrader's autograde runs it.

    ``timeout`` bounds the whole notebook, in seconds. Raises :class:`BuildError` naming the notebook
    and the cell when a cell fails or time runs out.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    # A fresh folder for notebook 05's saved runs: a page shows what this build ran, never an earlier run.
    env = dict(os.environ, GOINGDEEPER_STATIC="1", GOINGDEEPER_RUNS=str(Path(workdir) / ".runs"))
    env.pop("NBGRADER_EXECUTION", None)
    if fast:
        env["NBGRADER_EXECUTION"] = "autograde"
    deadline = time.monotonic() + timeout

    def remaining(cell: nbformat.NotebookNode) -> int:
        return max(1, int(deadline - time.monotonic()))

    client = NotebookClient(nb, kernel_name="python3", timeout_func=remaining,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=env)
    except CellTimeoutError as exc:
        raise BuildError(
            f"{name} ran past its timeout of {timeout:g} s: give it more with --timeout SECONDS, or build "
            f"with --fast (long runs shrink as when nbgrader grades).\n{exc}",
            reason=f"ran past its timeout of {timeout:g} s{_where(nb, client)}",
        ) from None
    except CellExecutionError as exc:
        lines = str(exc).strip().splitlines()
        error = (f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", "")
                 else lines[-1] if lines else type(exc).__name__)
        raise BuildError(f"{name} failed while the site was built:\n{exc}",
                         reason=f"{_one_line(error)}{_where(nb, client)}") from None
    return nb


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(exc: BaseException) -> str:
    """'TypeName: message', or the type's name alone when the message is empty."""
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _shown(solutions: Path) -> str:
    """How messages name the folder of solved assignments: ``solutions`` for the course's own, else its path."""
    try:
        return Path(solutions).resolve().relative_to(ROOT.resolve()).as_posix()
    except ValueError:
        return str(solutions)


def _where(nb: nbformat.NotebookNode, client) -> str:
    """' (code cell N)': the cell that failed or was running, counting the notebook's code cells from 1."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return f" (code cell {number})"
    index = getattr(client, "code_cells_executed", 0)
    return f" (code cell {index})" if 0 < index <= len(code) else ""


def copy_mathjax(site: Path) -> Path:
    """Copy MathJax (less :data:`MATHJAX_LEFT_OUT`) into ``site/mathjax/``; return that folder."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise BuildError("The site ships MathJax from the package jupyter-server-mathjax, which is not installed: "
                         "run `bash course.sh setup` (it is pinned in requirements.txt).") from None
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = site / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=lambda folder, names: [
        n for n in names if (Path(folder) / n).relative_to(source).as_posix() in MATHJAX_LEFT_OUT])
    return target


def render_page(nb: nbformat.NotebookNode, page: Page, *, previous: Page | None = None, next: Page | None = None,
                fast: bool = False) -> str:
    """The HTML page of an executed reader notebook: lab's look, figures embedded, no CDN, local MathJax."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="reader", extra_template_basedirs=[str(TEMPLATES)], embed_images=True)
    resources = {
        "metadata": {"name": page.title},
        "reader": {"fast": fast, "previous": previous, "next": next, "mathjax_url": "mathjax/MathJax.js"},
    }
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    return html


def _index(pages: list[Page], *, fast: bool, version: str | None, failed: dict[str, str] | None = None) -> str:
    """The index page: every page in order; one that ``failed`` ({assignment: reason}) is listed as not built."""
    import jinja2
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    failed = failed or {}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False)
    entries = [{"href": p.href, "title": p.title, "summary_html": markdown2html_mistune(p.info.summary),
                "failed": failed.get(p.info.id)} for p in pages]
    return env.get_template("index.html.j2").render(pages=entries, fast=fast, version=version,
                                                    mathjax_url="mathjax/MathJax.js")


def _solution(folder: Path) -> Path:
    notebooks = sorted(folder.glob("*.ipynb"))
    if len(notebooks) != 1:
        raise BuildError(f"{_shown(folder.parent)}/{folder.name} should hold one notebook, not {len(notebooks)}")
    return notebooks[0]


def build_site(out_dir: Path, *, only: Iterable[str] | None = None, fast: bool = False,
               timeout: float = DEFAULT_TIMEOUT, log=print, solutions: Path = SOLUTIONS) -> Path:
    """Build the reader's site into ``out_dir``; return the index page.

    ``only`` limits the build to some assignments (the index then lists only those); ``fast`` runs
    as nbgrader's autograde does; ``timeout`` bounds each notebook, in seconds; ``solutions`` is the
    folder of solved assignments (default: the course's ``solutions/``).

    A notebook that fails does not stop the build: every other page is built, and the index lists
    the failed ones as not built, each with its reason. Then :class:`SiteIncomplete` is raised.
    A ``solutions`` that is not a folder raises :class:`BuildError` before anything is built.
    """
    if not solutions.is_dir():
        raise BuildError(f"the solutions folder {solutions} does not exist or is not a folder")
    everything = sorted(p.name for p in solutions.iterdir() if p.is_dir() and p.name[:2].isdigit())
    chosen = list(only) if only else everything
    unknown = sorted(set(chosen) - set(everything))
    if unknown:
        raise BuildError(f"no such assignment: {', '.join(unknown)} (there are: {', '.join(everything)})")
    chosen = [a for a in everything if a in chosen]  # lecture order
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out_dir)
    pages: list[Page] = []
    executed: dict[str, nbformat.NotebookNode] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for assignment in chosen:
        started = time.monotonic()
        href = f"{assignment}.html"
        try:
            source = _solution(solutions / assignment)
            info = notebook_info(source)
        except Exception as exc:  # noqa: BLE001 - no notebook, several, or one that cannot be read: the rest goes on
            pages.append(Page(NotebookInfo(assignment, assignment, ""), href))
            failed[assignment] = (exc.reason if isinstance(exc, BuildError)
                                  else _one_line(f"cannot be read: {_error(exc)}"))
            log(f"site: {href} not built: {failed[assignment]}")
            continue
        pages.append(Page(info, href))
        try:
            nb = reader_notebook(nbformat.read(source, as_version=4))
            with tempfile.TemporaryDirectory(prefix=f"site-{assignment}-") as tmp:
                workdir = Path(tmp) / assignment
                shutil.copytree(source.parent, workdir, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
                executed[assignment] = execute_notebook(nb, workdir, fast=fast, timeout=timeout,
                                                        name=f"{_shown(solutions)}/{assignment}")
        except Exception as exc:  # noqa: BLE001 - a failed cell, a timeout, a kernel that died: the rest goes on
            failed[assignment] = exc.reason if isinstance(exc, BuildError) else _error(exc)
            log(f"site: {href} not built: {exc if isinstance(exc, BuildError) else failed[assignment]}")
            continue
        seconds[assignment] = time.monotonic() - started
    # The pages link to their neighbours among the pages that were built.
    built = [page for page in pages if page.info.id in executed]
    for i, page in enumerate(built):
        html = render_page(executed.pop(page.info.id), page, previous=built[i - 1] if i else None,
                           next=built[i + 1] if i + 1 < len(built) else None, fast=fast)
        (out_dir / page.href).write_text(html, encoding="utf-8")
        log(f"site: {page.href} ({seconds[page.info.id]:.0f} s{', fast mode' if fast else ''})")
    for assignment in failed:  # no stale page from an earlier build
        (out_dir / f"{assignment}.html").unlink(missing_ok=True)
    index = out_dir / "index.html"
    index.write_text(_index(pages, fast=fast, version=source_version(ROOT), failed=failed), encoding="utf-8")
    log(f"site: {index} (open it in a browser; it needs no network)")
    if failed:
        raise SiteIncomplete(failed, len(built), index)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash course.sh site", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, default=ROOT / "build" / "site",
                        help="output folder (default: build/site/)")
    parser.add_argument("--fast", action="store_true",
                        help="run as nbgrader grades (NBGRADER_EXECUTION=autograde): long runs shrink; the pages say so")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time allowed to each notebook (default: {DEFAULT_TIMEOUT})")
    parser.add_argument("--only", action="append", metavar="ASSIGNMENT",
                        help="build only this assignment (repeatable), e.g. --only 01_computational_graphs")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS, metavar="FOLDER",
                        help="the solved assignments to build from (default: solutions/)")
    args = parser.parse_args(argv)
    if not args.solutions.is_dir():
        print(f"course.sh site: --solutions {args.solutions}: no such folder", file=sys.stderr)
        return 2
    try:
        build_site(args.dir.resolve(), only=args.only, fast=args.fast, timeout=args.timeout,
                   solutions=args.solutions.resolve())
    except BuildError as exc:
        print(f"course.sh site: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
