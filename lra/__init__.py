"""Long Range Arena suite: shared encoder, training loop, measurement, results, reports."""

__version__ = "0.1.0"
