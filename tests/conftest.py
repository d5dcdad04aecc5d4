import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/wrong

from instructor.course import assignments  # noqa: E402
from instructor.scratch import ROOT  # noqa: E402


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def pytest_report_header(config):
    return f"assignments: {', '.join(assignments())}"
