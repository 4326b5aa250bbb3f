"""Where each key of a YAML document sits: line numbers from the node marks of `yaml.compose`."""

from __future__ import annotations

import yaml

Path = tuple[str | int, ...]


class LineMap:
    """1-based line of every key (and list item) of a document, looked up by key path."""

    def __init__(self, source: str | yaml.Node | None) -> None:
        """`source`: YAML text, or its node graph already composed (and, for a file that may be
        hostile, checked against the limits of `condsearch.space._limits.compose`: this walk
        expands aliases, so it is only as small as the graph's expansion)."""
        self.lines: dict[Path, int] = {}
        #: (path, line, line of the first occurrence) of each key that appears twice in a mapping
        self.duplicates: list[tuple[Path, int, int]] = []
        root = yaml.compose(source, Loader=yaml.SafeLoader) if isinstance(source, str) else source
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Path) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = _key(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.duplicates.append(((*path, key), line, seen[key]))
                seen[key] = line
                self.lines[(*path, key)] = line
                self._walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                self._walk(item, (*path, i))

    def line(self, path: Path) -> int:
        """Line of `path`, or of its nearest ancestor present in the file (1 for the document)."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 1


def _key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<non-scalar key>"
