"""nbgrader configuration for the Going Deeper course.

The course root is the repository: ``solutions/`` is nbgrader's source
directory and ``notebooks/`` its release directory. nbgrader's working state
(gradebook, submissions, autograded copies, feedback, the exchange) lives
under ``autograder/`` and is not committed.

nbgrader finds this file when it runs in ``autograder/``, or anywhere when
``JUPYTER_CONFIG_PATH`` includes this folder (``bash course.sh nbgrader ...``
and ``bash course.sh lab`` set it).
"""

import os

c = get_config()  # noqa: F821 - injected by traitlets

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)

c.CourseDirectory.course_id = "going-deeper"
c.CourseDirectory.root = _root
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = os.path.join("autograder", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("autograder", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("autograder", "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_here, "gradebook.db")

# nbgrader's exchange (release_assignment, fetch, submit, collect, and the lab's Assignment List and
# Course List): a folder of the course's working state, created by `bash course.sh setup`, so that
# the menus of `bash course.sh lab --instructor` and the Formgrader work without a JupyterHub. On a
# JupyterHub with a shared exchange, set GOINGDEEPER_EXCHANGE to it (e.g. /srv/nbgrader/exchange).
c.Exchange.root = os.environ.get("GOINGDEEPER_EXCHANGE") or os.path.join(_here, "exchange")

# A student who deletes or retypes a test cell is still graded by the original.
c.OverwriteCells.add_missing_cells = True
# Per-cell limit while grading; the notebooks' own cells take seconds.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

# Feedback shows students what failed and why (the test's message), but not
# the source of the hidden tests.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402



class ClearHiddenTestsOfTestCells(ClearHiddenTests):
    """Hidden tests are cut from the course's test cells only. A student's answer that happens to contain the
    marker line (in a comment, a string) is shown as written; nbgrader's own preprocessor would stop the
    whole feedback run on it ("No end hidden tests statement found")."""

    def preprocess_cell(self, cell, resources, cell_index):
        from nbgrader import utils

        if utils.is_grade(cell) and not utils.is_solution(cell):
            return super().preprocess_cell(cell, resources, cell_index)
        return cell, resources


class WrapLongLines(CSSHTMLHeaderPreprocessor):
    """nbgrader's feedback page with long lines wrapped: a test's message is one long line, and a page that
    scrolls sideways hides its end, where the message says what to fix. (The page inlines the CSS this
    preprocessor hands it, after the syntax highlighting's.)"""

    WRAP = ("div.output_area pre, div.output_subarea pre, div.output_text pre, div.input_area pre, .highlight pre "
            "{ white-space: pre-wrap !important; overflow-wrap: anywhere; }\n"
            "div.output_subarea, div.input_area { overflow-x: visible; max-width: 100%; }\n"
            "div.output_subarea img { max-width: 100%; height: auto; }")

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        resources.setdefault("inlining", {}).setdefault("css", []).append(self.WRAP)
        return nb, resources


# The term (autograder/term.toml; see term.example.toml): due dates, extensions and the late penalty, applied
# by nbgrader's own plugin mechanism (a LateSubmissionPlugin, called by AssignLatePenalties, here the course's
# subclass that first copies the due date and the student's extension into the gradebook), and what each test
# cell's feedback shows. `bash course.sh grade` reads the same file through the same code.
import sys  # noqa: E402

try:
    import instructor.term  # noqa: F401
except ImportError:  # nbgrader run from another environment: the course's own package, from this checkout
    sys.path.insert(0, _root)
from instructor.feedback import FeedbackVisibility  # noqa: E402
from instructor.term import LatePenalty, TermLatePenalties  # noqa: E402
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import CheckCellMetadata, Execute, IgnorePattern, LimitOutput, SaveAutoGrades  # noqa: E402

_term = os.path.join(_here, "term.toml")
c.Autograde.autograde_preprocessors = [Execute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, TermLatePenalties, CheckCellMetadata]
c.TermLatePenalties.plugin_class = LatePenalty
c.TermLatePenalties.term_file = _term
c.LatePenalty.term_file = _term
c.FeedbackVisibility.term_file = _term

c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTestsOfTestCells, FeedbackVisibility, WrapLongLines]
c.WrapLongLines.enabled = True  # nbconvert's preprocessors are off unless enabled by name
