"""The instructor's room: commands that only the course's owners run (never shipped to students, never mounted in
the grading sandbox). Run them from the course root: ``python -m instructor.<command>``.

* :mod:`instructor.train_full`: notebook 05's four networks (or any of the CIFAR family) with the paper's recipe,
  trained with the course's reference training pieces from ``autograder/reference/degradation.py``; it writes the
  histories that the notebook shows as ``results_full.json``.
"""
