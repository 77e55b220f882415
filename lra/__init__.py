"""Long Range Arena suite: the `lra` command on top, one module per command below it, and the
core they share in `lra.core` (docs/architecture.md has the map and the import rules)."""

__version__ = "0.1.0"
