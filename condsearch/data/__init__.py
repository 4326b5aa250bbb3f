"""Tasks: seeded train / validation / test splits of the data sets a search can use offline."""

from condsearch.data._load import load_task
from condsearch.data._task import Task, TaskError

__all__ = ["Task", "TaskError", "load_task"]
