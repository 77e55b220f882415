"""The core every command shares: configuration and presets, names and run identity, result
records, the model, the data pipeline, the training step, measurement, process isolation, the
machine probe and checkpoints. Nothing here imports a command (docs/architecture.md)."""
