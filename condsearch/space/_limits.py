"""Limits on a search-space file, checked before its YAML becomes Python values.

A small hostile YAML can exhaust memory: aliases that expand exponentially (a "billion laughs"
document), or nesting deep enough to overflow the recursion of the parser. So a file is composed
once by `compose`, which refuses text past `MAX_CHARS`, a node graph past `MAX_NODES` nodes or
`MAX_DEPTH` levels, and then counts the graph with every alias expanded (an alias is the same node
object met again), stopping as soon as the count passes `MAX_NODES` or the depth `MAX_DEPTH`.
Both the line map and the data are then built from that one small graph. Documented under
"Limits" in docs/search-space.md.
"""

from __future__ import annotations

import yaml

from condsearch.space._errors import dotted

#: the most characters a search-space file may hold (about 1 MB; a real space is a few KB)
MAX_CHARS = 1_000_000
#: the most values (scalars, lists, mappings, keys) a document may hold, each alias use counted in
#: full (a real space holds a few hundred; reaching this many takes the parser about a second)
MAX_NODES = 50_000
#: the deepest a document may nest: keys and list items in a path from the top
MAX_DEPTH = 64
#: a key path longer than this is shown cut short in a message
_SHOWN_PARTS = 6

Path = tuple[str | int, ...]


class LimitExceeded(Exception):
    """A document past one of the limits: where it stopped (line, key path) and why."""

    def __init__(self, line: int, path: Path, message: str, whole_file: bool = False) -> None:
        self.line, self.path, self.message, self.whole_file = line, path, message, whole_file
        super().__init__(message)

    @property
    def key(self) -> str:
        """The dotted key path, cut short when long; `(file)` for the file's size."""
        if self.whole_file:
            return "(file)"
        if len(self.path) > _SHOWN_PARTS:
            return dotted(self.path[:_SHOWN_PARTS]) + "..."
        return dotted(self.path)


def size_message(size: int, unit: str = "characters") -> str:
    return (f"the file is too large ({size:,} {unit}); a search space may hold at most "
            f"{MAX_CHARS:,} characters (about 1 MB)")


def _too_many() -> str:
    return (f"the document holds more than {MAX_NODES:,} values (each use of an alias counted in "
            f"full); a search space may hold at most {MAX_NODES:,}")


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; a search space may nest at most {MAX_DEPTH} levels"


def compose(text: str) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    """The composed node graph of `text` (None for an empty document) and the loader that can
    construct its data (`loader.construct_document(node)`; call `loader.dispose()` after).
    Raises LimitExceeded past a limit, yaml.YAMLError for invalid YAML."""
    if len(text) > MAX_CHARS:
        raise LimitExceeded(1, (), size_message(len(text)), whole_file=True)
    loader = _CountingLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _Expansion().visit(root)
    except BaseException:
        loader.dispose()
        raise
    return root, loader


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops past MAX_NODES nodes or MAX_DEPTH levels of nesting (so
    deep text cannot exhaust the composer's recursion nor many values its memory)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._composed = 0
        #: the index of each node being composed: None (the document, a key), a key node, an int
        self._stack: list[yaml.Node | int | None] = []

    def compose_node(self, parent: yaml.Node | None, index: yaml.Node | int | None) -> yaml.Node:
        self._composed += 1
        self._stack.append(index)
        try:
            if self._composed > MAX_NODES:
                raise self._stop(_too_many())
            if len(self._stack) - 1 > MAX_DEPTH:
                raise self._stop(_too_deep())
            return super().compose_node(parent, index)
        finally:
            self._stack.pop()

    def _stop(self, message: str) -> LimitExceeded:
        path: Path = tuple(_part(i) for i in self._stack if i is not None)
        return LimitExceeded(self.peek_event().start_mark.line + 1, path, message)


class _Expansion:
    """Counts a node graph with aliases expanded, stopping past MAX_NODES or MAX_DEPTH; reports
    the key where the alias expansion that went past began (or where it stopped, with none)."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: set[int] = set()
        self.path: list[str | int] = []
        self.lines: list[int] = []
        #: index in `path` of the part whose node is an alias (met before), None outside one
        self.alias_at: int | None = None

    def visit(self, node: yaml.Node) -> None:
        self.count += 1
        entered_alias = False
        if id(node) in self.seen:
            if self.alias_at is None and self.path:
                self.alias_at, entered_alias = len(self.path) - 1, True
        else:
            self.seen.add(id(node))
        if self.count > MAX_NODES:
            raise self._stop(_too_many())
        if len(self.path) > MAX_DEPTH:
            raise self._stop(_too_deep())
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                self.visit(key_node)  # a key can be a collection (or an alias of one) too
                self._descend(_part(key_node), key_node.start_mark.line + 1, value_node)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._descend(i, item.start_mark.line + 1, item)
        if entered_alias:
            self.alias_at = None

    def _descend(self, part: str | int, line: int, node: yaml.Node) -> None:
        self.path.append(part)
        self.lines.append(line)
        try:
            self.visit(node)
        finally:
            self.path.pop()
            self.lines.pop()

    def _stop(self, message: str) -> LimitExceeded:
        end = len(self.path)
        if self.alias_at is not None:
            # a key's own line is where the alias is written; a list item's is the anchor's
            end = self.alias_at + (1 if isinstance(self.path[self.alias_at], str) else 0)
        line = self.lines[end - 1] if end else 1
        return LimitExceeded(line, tuple(self.path[:end]), message)


def _part(index: yaml.Node | int) -> str | int:
    if isinstance(index, int):
        return index
    return str(index.value) if isinstance(index, yaml.ScalarNode) else "<non-scalar key>"


def load_limited(text: str) -> object:
    """`yaml.safe_load(text)` within the limits (for short YAML such as a `--set` value).
    Raises LimitExceeded or yaml.YAMLError."""
    root, loader = compose(text)
    try:
        return None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()
