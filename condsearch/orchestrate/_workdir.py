"""A search's working directory: where its study, MLflow store and lock live."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from condsearch._names import ATTR_WORKDIR_STATE

STATE_FILE = "condsearch.json"


class SearchError(Exception):
    """A search cannot start or be read: the message says what to do."""


@dataclass
class WorkdirState:
    """What a later `pareto`, `export` or resumed `search` needs to find a search's results."""

    study_name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    space_name: str
    objectives: list[list[str]]
    #: the experiment's name ("" in a state written before it was recorded)
    experiment_name: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkdirState:
        """A state from its JSON form, older (missing keys default) or newer (extra keys)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    def names(self) -> list[str]:
        return [n for n, _ in self.objectives]


def default_storage(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / 'study.db'}"


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def write_state(workdir: Path, state: WorkdirState) -> None:
    path = workdir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, path)


def state_from_storage(storage: str, study_name: str | None = None) -> WorkdirState:
    """A search's state read from its study database alone (no workdir needed): what
    `pareto` and `export` use on a machine that reaches the study storage and MLflow."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              "name one with --study")
        study_name = names[0]
    elif study_name not in names:
        raise SearchError(f"no study {study_name!r} in {storage}; it holds: "
                          f"{', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    data = study.user_attrs.get(ATTR_WORKDIR_STATE)
    if not data:
        raise SearchError(f"the study {study_name!r} in {storage} was not made by condsearch search")
    return WorkdirState.from_dict({**data, "storage": storage})


def check_workdir(workdir: str | Path) -> None:
    """SearchError when `workdir`, or the nearest part of its path that exists, is not a
    directory (a workdir must be a directory, or creatable as one)."""
    path = Path(workdir)
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "is" if part == path else f"cannot be created: {part} is"
                raise SearchError(f"{workdir}: not a directory ({where} a file); "
                                  "use another --workdir")
            return


def read_workdir(workdir: str | Path | WorkdirState) -> WorkdirState:
    """The state a search left in `workdir`; SearchError when there is none."""
    if isinstance(workdir, WorkdirState):
        return workdir
    check_workdir(workdir)
    path = Path(workdir) / STATE_FILE
    if not path.is_file():
        raise SearchError(
            f"{workdir}: no search here (no {STATE_FILE}); run `condsearch search SPACE.yaml "
            f"--workdir {workdir}` first"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return WorkdirState.from_dict(data)


class WorkdirLock:
    """An exclusive lock so two searches never drive the same study from one workdir."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise SearchError(
                f"{self.path.parent}: another condsearch search is running in this workdir; "
                "wait for it or use another --workdir"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
