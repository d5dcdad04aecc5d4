"""Grading in two processes: the student's code in a sandbox, the tests' comparisons outside it.

``runner.py`` and ``wire.py`` are copied into each sandbox; ``trusted.py``
starts the sandbox and talks to it from the grader's side.
"""
