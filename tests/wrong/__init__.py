"""Plausible wrong implementations, one list per assignment.

For every answer cell (its nbgrader grade id is the stem: ``engine_backward``)
the course keeps at least one wrong version that a student could plausibly
write. The tests grade each one with nbgrader and assert that the test cell
``test_<stem>`` scores 0 and that its failure message contains ``feedback``,
the words that point the student at the mistake.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wrong:
    answer: str  # grade id of the answer cell
    mistake: str  # the mistake, in words
    source: str  # the whole answer cell, as the student would leave it
    feedback: str  # a phrase the failing test's message must contain


@dataclass(frozen=True)
class Right:
    """A correct answer written differently from ours: both graders must give its test cell full marks."""

    answer: str  # grade id of the answer cell
    how: str  # what is different, in words
    source: str  # the whole answer cell


def right_by_assignment() -> dict[str, list[Right]]:
    from . import batchnorm, computational_graphs, degradation, fully_connected, resnet

    return {
        "01_computational_graphs": computational_graphs.RIGHT,
        "02_fully_connected": fully_connected.RIGHT,
        "03_batchnorm": batchnorm.RIGHT,
        "04_resnet": resnet.RIGHT,
        "05_degradation": degradation.RIGHT,
    }


def by_assignment() -> dict[str, list[Wrong]]:
    from . import batchnorm, computational_graphs, degradation, fully_connected, resnet

    return {
        "01_computational_graphs": computational_graphs.WRONG,
        "02_fully_connected": fully_connected.WRONG,
        "03_batchnorm": batchnorm.WRONG,
        "04_resnet": resnet.WRONG,
        "05_degradation": degradation.WRONG,
    }
