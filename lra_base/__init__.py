"""The base layer under the whole suite: user-facing errors, typed options, atomic file writes.

`attentions/` and `tasks/` build on this package and on nothing else of the project, so a new
attention or task never depends on the harness in `lra/`. It imports nothing of the project
itself (docs/architecture.md; tests/test_architecture.py keeps both rules true).
"""
