"""Export a chosen point of a search as files, and load it back as a model."""

from condsearch.export._export import export_point
from condsearch.export._files import ExportError
from condsearch.export._load import evaluate_exported, load_exported, read_export

__all__ = ["ExportError", "evaluate_exported", "export_point", "load_exported", "read_export"]
