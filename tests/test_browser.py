"""The course in a real browser: Chromium, driven by Playwright, against `bash course.sh lab` and the reader's site.

In the student edition's JupyterLab (started as its README says) every notebook opens unmodified and
runs until its first unanswered exercise, which says so; typing notebook 01's first answer turns its
test to ✓; Validate shows its dialog; each explorer redraws when a slider moves. The reader's site,
opened from disk with the network off, shows typeset math and figures. Screenshots go to
build/screenshots/.

Chromium is Debian's (`apt-get install chromium`; .ci/run installs it); Playwright's own browser
download is not used. Without a Chromium these tests skip, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from labserver import TOKEN, course_venv, lab_server, venv_is_current

from instructor.course import ROOT, assignments, kernel_language_info, substance_differences
from instructor.editions import build_student_edition
from instructor.reader import build_site, reader_notebook

SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: How long one notebook may take to run up to its first unanswered exercise, in the lab.
RUN_ALL_TIMEOUT_S = 180
EXPLORER = re.compile(r"\b(\w+_explorer)\(")


def _chromium() -> str | None:
    for candidate in (os.environ.get("GOINGDEEPER_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: run `bash course.sh setup` (it is pinned in requirements.txt)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium found: install Debian's (`apt-get install chromium`, as .ci/run does) or set "
                    "GOINGDEEPER_CHROMIUM=/path/to/chromium")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _solved_copy(assignment: str) -> nbformat.NotebookNode:
    """The solved notebook (no hidden tests), told to run short as nbgrader does, for the explorers."""
    nb = reader_notebook(nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4))
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        'import os\nos.environ["NBGRADER_EXECUTION"] = "autograde"  # the browser test: short runs'))
    return nb


def _explorer_assignments() -> list[str]:
    return [a for a in assignments()
            if EXPLORER.search((ROOT / "solutions" / a / f"{a}.ipynb").read_text())]


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    """The student edition, plus solved copies of the notebooks with explorers (named *_solved.ipynb)."""
    folder, _ = build_student_edition(tmp_path_factory.mktemp("edition"), check_release=False)
    for a in _explorer_assignments():
        nbformat.write(_solved_copy(a), folder / "notebooks" / a / f"{a}_solved.ipynb")
    return folder


@pytest.fixture(scope="module")
def lab(edition, browser):
    reason = venv_is_current(edition)
    if reason:
        pytest.skip(reason)
    env = {"PYTHONPATH": str(edition), "GOINGDEEPER_VENV": str(course_venv())}
    with lab_server(edition, env=env) as base:
        yield base


def _open(page, base: str, path: str) -> None:
    """Open a notebook in a fresh workspace and wait until its kernel is idle."""
    page.goto(f"{base}/lab/tree/{path}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("document.querySelector('.jp-StatusBar-Widget') !== null && "
                           "document.body.innerText.includes('| Idle')", timeout=90_000)


def _wait_until_all_cells_ran(page, timeout_s: float) -> None:
    """Wait until no cell of the open notebook is running or queued (its prompt shows ``[*]``)."""
    page.wait_for_function(
        "() => { const prompts = document.querySelectorAll('.jp-InputArea-prompt');"
        " return prompts.length > 0 && ![...prompts].some(p => p.textContent.includes('*')); }",
        timeout=timeout_s * 1000)


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()


def _tab_is_dirty(page) -> bool:
    tab = page.locator("li.lm-TabBar-tab[data-type='document-title'].jp-mod-current")
    return "jp-mod-dirty" in (tab.get_attribute("class") or "")


def _first_answer(nb: nbformat.NotebookNode) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))


def test_student_notebooks_open_unmodified_and_run_to_the_first_unanswered_exercise(lab, browser, edition):
    started = time.monotonic()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    for a in assignments():
        path = edition / "notebooks" / a / f"{a}.ipynb"
        committed = nbformat.read(path, as_version=4)
        _open(page, lab, f"{a}/{a}.ipynb")
        time.sleep(1.5)  # JupyterLab writes the kernel's language_info into the model once it connects
        assert "notified about official Jupyter news" not in page.inner_text("body"), "the news pop-up showed"
        if committed.metadata.get("language_info") == kernel_language_info():
            assert not _tab_is_dirty(page), f"{a} is marked modified on opening: run `bash course.sh strip`"
        _menu(page, "Run", "Run All Cells")
        failure = page.locator(".jp-OutputArea-output", has_text=re.compile("not implemented yet|NotImplementedError"))
        failure.first.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        failure.first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # the notebook renders the cells it scrolled to
        page.screenshot(path=str(SCREENSHOTS / f"{a}_run_all.png"))
        # Saved after running, the notebook still equals the release in substance (course.sh check passes).
        _menu(page, "File", "Save Notebook")
        page.wait_for_function("!document.querySelector(\"li.lm-TabBar-tab.jp-mod-current.jp-mod-dirty\")")
        assert substance_differences(committed, nbformat.read(path, as_version=4)) == [], a
    page.close()
    print(f"notebooks opened and run in {time.monotonic() - started:.0f} s")


def test_an_answer_turns_its_test_to_a_tick_and_validate_shows_its_dialog(lab, browser, edition):
    a = assignments()[0]
    release = nbformat.read(edition / "notebooks" / a / f"{a}.ipynb", as_version=4)
    i = _first_answer(release)
    grade_id = release.cells[i].metadata.nbgrader.grade_id
    solution = next(c for c in reader_notebook(nbformat.read(ROOT / "solutions" / a / f"{a}.ipynb", as_version=4)).cells
                    if c.get("id") == release.cells[i].get("id"))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    _open(page, lab, f"{a}/{a}.ipynb")
    menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
    assert "Nbgrader" not in menus, f"the student's lab shows an Nbgrader menu (its items are instructors'): {menus}"
    cells = page.locator(".jp-Notebook .jp-Cell")
    # Run the cells above the answer (the set-up), then type the answer and run it and its test.
    cells.nth(0).click()
    for _ in range(i):
        page.keyboard.press("Shift+Enter")
    test_output = cells.nth(i + 1).locator(".jp-OutputArea-output")
    cells.nth(i).locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(solution.source)
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    test_output.filter(has_text="✓").first.wait_for(timeout=90_000)
    assert "✓" in test_output.first.inner_text(), f"the test of {grade_id} did not pass"
    test_output.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"{a}_answer_{grade_id}_passes.png"))
    # nbgrader's Validate button (the notebook's toolbar): it saves, runs the notebook, and shows a dialog.
    page.locator(".jp-NotebookPanel-toolbar").get_by_text("Validate", exact=True).click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("Validation Results").wait_for(timeout=180_000)
    page.screenshot(path=str(SCREENSHOTS / f"{a}_validate.png"))
    body = dialog.inner_text()
    assert "error running the validate command" not in body, body[:2000]
    dialog.get_by_role("button", name="Ok").click()
    page.close()


@pytest.mark.parametrize("assignment", _explorer_assignments())
def test_explorer_redraws_when_a_slider_moves(lab, browser, assignment):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    _open(page, lab, f"{assignment}/{assignment}_solved.ipynb")
    _menu(page, "Run", "Run All Cells")
    figure = page.locator(".widget-output img").first
    figure.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
    # The explorer draws while later cells are still queued: a slider moved now would wait behind them
    # (under CI's load, longer than the redraw's limit). Move it once every cell has run.
    _wait_until_all_cells_ran(page, RUN_ALL_TIMEOUT_S)
    figure.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"{assignment}_explorer_before.png"))
    before = figure.get_attribute("src")
    # Move the slider from the keyboard, as a user may: a mouse drag needs the handle on screen, and
    # JupyterLab lays out cells lazily (content-visibility), so a box measured once can lie off screen.
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    for _ in range(3):
        page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
    page.wait_for_function(
        "before => { const img = document.querySelector('.widget-output img');"
        " return img !== null && img.getAttribute('src') !== before; }", arg=before, timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / f"{assignment}_explorer_after.png"))
    page.close()


def test_reader_site_shows_math_and_figures_offline(browser, tmp_path):
    a = assignments()[0]
    site = tmp_path / "site"
    build_site(site, only=[a], fast=True, timeout=600, log=lambda *_: None)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_offline(True)
    refused: list[str] = []

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.goto((site / "index.html").as_uri())
    page.screenshot(path=str(SCREENSHOTS / "site_index.png"))
    page.locator(f"a[href='{a}.html']").first.click()
    page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                           "document.querySelectorAll('.MathJax, .MathJax_Display').length > 0", timeout=60_000)
    assert page.locator(".MathJax_Error, .MathJax merror").count() == 0, "MathJax could not typeset some math"
    assert page.locator("script[type^='math/tex']").count() >= 5
    figures = page.locator("img[src^='data:image/png']")
    assert figures.count() >= 1
    assert page.evaluate("() => Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")
    figures.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"site_{a}.png"))
    assert refused == [], f"the site asked the network for {refused}"
    context.close()
