"""Validation problems, each pointing at a file, a line and a dotted key."""

from __future__ import annotations

from dataclasses import dataclass

#: the `file` of problems that come from `--set` overrides rather than the YAML file
OVERRIDE_FILE = "--set"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a search space, printed as `file:line: key: message`."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class SpaceError(Exception):
    """A search space that does not validate; `.problems` lists everything wrong, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def dotted(path: tuple[str | int, ...]) -> str:
    """A key path as users write it: `model.components.early_exit.every`, list items as `[i]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"
