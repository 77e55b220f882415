"""The LRA tasks. Each module in this folder defines one task (a `tasks.base.Task` subclass with a
`name`), registered when the package is imported.

    import tasks
    tasks.available()              # ['image', 'listops', ...]
    task = tasks.get("listops")    # its description: max_len, vocab_size, num_classes, num_inputs, ...
    split = task.prepared(data_dir, "train")
"""

import importlib
import pkgutil

from lra_base.errors import ConfigError, did_you_mean
from tasks.base import SPLITS, Example, PreparedSplit, Recipe, Smoke, Task, locate
from tasks.base import _TASKS

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def available() -> list[str]:
    return sorted(_TASKS)


def get(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}{did_you_mean(name, _TASKS)}. Valid tasks: {', '.join(available())}"
        ) from None


__all__ = ["SPLITS", "Example", "PreparedSplit", "Recipe", "Smoke", "Task", "available", "get", "locate"]
