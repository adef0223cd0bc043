"""Task definitions, built-in tasks, and their real data (loaders and fixed train/test splits).

See ``engine/tasks/README.md`` (and ``engine.tasks.task``) for the YAML task format.
"""

from .real import SPLITS, clear_cache, has_real_data, load_real, read_table, stable_key
from .task import DEFAULT_MIN_CHARS, DEFAULT_TEST_FRACTION, Source, Task, list_builtin, load_task

__all__ = [
    "DEFAULT_MIN_CHARS",
    "DEFAULT_TEST_FRACTION",
    "SPLITS",
    "Source",
    "Task",
    "clear_cache",
    "has_real_data",
    "list_builtin",
    "load_real",
    "load_task",
    "read_table",
    "stable_key",
]
