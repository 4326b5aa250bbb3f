"""A search's working directory: where its study, MLflow store and lock live.

`DIR/condsearch.json` records where the study and the MLflow runs are. A store inside the workdir
is recorded relative to it, with the placeholder `{workdir}` for the workdir's location:

    "storage": "sqlite:///{workdir}/study.db",
    "tracking_uri": "sqlite:///{workdir}/mlflow.db",

(`file://{workdir}/...` for a file store inside it), with `"format": 2`, and read against where
the workdir is now, so a moved or copied workdir uses its own files. Every other store (a
server, a database or file outside the workdir) is recorded absolute, as given. A state file
written before this form (no "format", all paths absolute) still reads: `study.db` / `mlflow.db`
of the directory it was written in are read as the current workdir's (`_rebase_old_paths`).

Every `sqlite:` file a command would open is first looked at read-only (`inspect_sqlite`), so an
empty, truncated, corrupt or foreign database is refused in one line before Optuna or MLflow can
create tables in it or reset anything. A copied or moved workdir's MLflow store still names the
original's `mlartifacts/` as its artifact root (MLflow records it absolute); `follow_move` points
it, in the workdir's own `mlflow.db`, at the workdir's `mlartifacts/`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from condsearch._names import ATTR_WORKDIR_STATE

STATE_FILE = "condsearch.json"
#: the files and folder a search keeps in its workdir by default
STUDY_FILE = "study.db"
TRACKING_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
LOCK_FILE = ".lock"
#: what `condsearch.json` writes for the workdir's own location
WORKDIR_PLACEHOLDER = "{workdir}"
_SQLITE_IN_WORKDIR = f"sqlite:///{WORKDIR_PLACEHOLDER}/"
_FILE_IN_WORKDIR = f"file://{WORKDIR_PLACEHOLDER}/"
#: `condsearch.json`'s "format": 2 records stores inside the workdir relative to it; a file
#: without the key (format 1) holds absolute paths only
STATE_FORMAT = 2

#: the first bytes of every SQLite database file
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: a database up to this size gets a full `PRAGMA quick_check` (about 2 ms a megabyte); a larger
#: one only its header, its size against the header's page count, and its schema
QUICK_CHECK_BYTES = 64 << 20
#: tables every Optuna RDB storage has, and every MLflow SQL store
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
MLFLOW_TABLES = frozenset({"experiments", "runs"})
#: MLflow's columns that hold artifact locations (`file:` URIs under an experiment's root)
_ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "source"),
                     ("model_versions", "storage_location"))


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
    return f"sqlite:///{workdir.resolve() / STUDY_FILE}"


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / TRACKING_FILE}"


# ---- URIs relative to the workdir ----------------------------------------------------------------


def sqlite_file(uri: str) -> tuple[Path, str] | None:
    """(path, `?query` suffix) of an `sqlite:///PATH` URL naming a file, else None (another
    scheme, an in-memory database)."""
    if not uri.startswith("sqlite:///"):
        return None
    path, sep, query = uri[len("sqlite:///"):].partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path), sep + query


def _file_uri_path(uri: str) -> Path | None:
    """The local path of a `file:` URI, else None."""
    if not uri.startswith("file:"):
        return None
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path)) if parsed.path else None


def _store_path(uri: str) -> Path | None:
    """The local file or folder an `sqlite:` or `file:` URI names, else None."""
    found = sqlite_file(uri)
    return found[0] if found is not None else _file_uri_path(uri)


def path_inside(path: Path, root: Path) -> Path | None:
    """`path` relative to `root` (both resolved) when it lies inside it, else None."""
    if not path.is_absolute():
        return None
    try:
        rel = path.resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return None
    return rel if rel.parts else None


def portable_uri(uri: str, workdir: Path) -> str:
    """`uri` as `condsearch.json` records it: a store inside `workdir` relative to it (the
    `{workdir}` placeholder), any other as given."""
    root = workdir.resolve()
    found = sqlite_file(uri)
    if found is not None:
        rel = path_inside(found[0], root)
        if rel is not None:
            return f"{_SQLITE_IN_WORKDIR}{rel.as_posix()}{found[1]}"
        return uri
    path = _file_uri_path(uri)
    if path is not None:
        rel = path_inside(path, root)
        if rel is not None:
            return f"{_FILE_IN_WORKDIR}{rel.as_posix()}"
    return uri


def resolve_uri(uri: str, workdir: Path) -> str:
    """A recorded URI with the `{workdir}` placeholder replaced by `workdir`'s location."""
    root = workdir.resolve()
    if uri.startswith(_SQLITE_IN_WORKDIR):
        rel, sep, query = uri[len(_SQLITE_IN_WORKDIR):].partition("?")
        return f"sqlite:///{root / rel}{sep}{query}"
    if uri.startswith(_FILE_IN_WORKDIR):
        return (root / uri[len(_FILE_IN_WORKDIR):]).as_uri()
    return uri


def _rebase(uri: str, old: Path, new: Path) -> str:
    """`uri` moved from under `old` to under `new` when it is a store inside `old`."""
    path = _store_path(uri)
    if path is None or not path.is_absolute():
        return uri
    try:
        rel = Path(os.path.normpath(path)).relative_to(os.path.normpath(old))
    except ValueError:
        return uri
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{new / rel}{sqlite_file(uri)[1]}"  # type: ignore[index]
    return (new / rel).as_uri()


def _recorded_workdir(storage: str, tracking_uri: str, root: Path) -> Path | None:
    """Where a state file with absolute paths (written before the `{workdir}` form) was written,
    when that is not `root`: the directory D of a default store (`D/study.db`, `D/mlflow.db`)
    when `root` holds a file of that name (a copy or a move carries it), when D no longer exists
    (moved), or when D is a workdir itself (it holds a `condsearch.json`: the original of a copy,
    whose files the copy must never use). A default-named store in a directory that is none of
    these (a shared folder) stays as recorded."""
    study, tracking = sqlite_file(storage), sqlite_file(tracking_uri)
    study_dir = study[0].parent if study and study[0].name == STUDY_FILE else None
    tracking_dir = tracking[0].parent if tracking and tracking[0].name == TRACKING_FILE else None
    candidates = [(d, name) for d, name in ((study_dir, STUDY_FILE), (tracking_dir, TRACKING_FILE))
                  if d is not None and d.is_absolute()]
    if any(os.path.normpath(d) == str(root) or _same_dir(d, root) for d, _ in candidates):
        return None
    for found, name in candidates:
        if (root / name).is_file():
            return found
    for found, _ in candidates:
        if not found.exists() or (found / STATE_FILE).is_file():
            return found
    return None


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _rebase_old_paths(state: WorkdirState, root: Path) -> WorkdirState:
    """An old state file's absolute defaults moved to where the workdir is now; other paths as
    recorded."""
    old = _recorded_workdir(state.storage, state.tracking_uri, root)
    if old is None:
        return state
    state.storage = _rebase(state.storage, old, root)
    state.tracking_uri = _rebase(state.tracking_uri, old, root)
    return state


# ---- the state file ------------------------------------------------------------------------------


def write_state(workdir: Path, state: WorkdirState) -> None:
    """Write `condsearch.json`, stores inside the workdir relative to it."""
    path = workdir / STATE_FILE
    data: dict[str, Any] = asdict(state)
    data["storage"] = portable_uri(state.storage, workdir)
    data["tracking_uri"] = portable_uri(state.tracking_uri, workdir)
    data["format"] = STATE_FORMAT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _corrupt_state(where: Path | str, detail: str) -> SearchError:
    return SearchError(f"{where}: corrupt workdir record ({detail}); restore it from a backup, "
                       "or use another --workdir")


def _checked_state(data: Any, path: Path | str) -> WorkdirState:
    """The state `data` (parsed JSON) describes; SearchError naming what is wrong with it."""
    if not isinstance(data, dict):
        raise _corrupt_state(path, f"a JSON {type(data).__name__}, not an object")
    required = [f.name for f in fields(WorkdirState) if f.name != "experiment_name"]
    missing = [name for name in required if name not in data]
    if missing:
        raise _corrupt_state(path, f"missing {', '.join(missing)}")
    for name in ("study_name", "storage", "tracking_uri", "experiment_id", "space_name"):
        if not isinstance(data[name], str) or not data[name].strip():
            raise _corrupt_state(path, f"{name} is {json.dumps(data[name])[:60]}, not a "
                                 "non-empty string")
    if not isinstance(data.get("experiment_name", ""), str):
        raise _corrupt_state(path, "experiment_name is not a string")
    objectives = data["objectives"]
    if not isinstance(objectives, list) or not objectives or not all(
            isinstance(o, list) and len(o) == 2 and all(isinstance(v, str) for v in o)
            and o[1] in ("maximize", "minimize") for o in objectives):
        raise _corrupt_state(path, "objectives is not a list of [name, maximize|minimize]")
    return WorkdirState.from_dict(data)


def read_state(workdir: str | Path) -> WorkdirState | None:
    """The state `workdir`'s `condsearch.json` records, its paths read against where the workdir
    is now; None when there is no such file; SearchError when it cannot be read or is corrupt.
    Touches nothing but that file (read)."""
    path = Path(workdir) / STATE_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _corrupt_state(path, "a directory, not a file") from None
    except OSError as exc:
        raise SearchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = "empty" if not text.strip() else f"not valid JSON: {exc}"
        raise _corrupt_state(path, detail) from None
    state = _checked_state(data, path)
    root = Path(workdir).resolve()
    if data.get("format", 1) != 1:
        state.storage = resolve_uri(state.storage, root)
        state.tracking_uri = resolve_uri(state.tracking_uri, root)
        return state
    return _rebase_old_paths(state, root)


# ---- SQLite files, looked at before Optuna or MLflow open them -----------------------------------


@dataclass(frozen=True)
class SqliteFile:
    """What `inspect_sqlite` found at a path."""

    path: Path
    exists: bool
    #: its tables' names (none for a 0-byte file or a database without tables); None when the
    #: file could not be read just now (locked past the timeout, a hot journal to roll back)
    tables: frozenset[str] | None = frozenset()
    #: the Optuna studies it holds, when it has Optuna's tables
    studies: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.exists and self.tables is not None and not self.tables


def _read_head(path: Path, what: str) -> bytes:
    """The first 100 bytes of a file (an SQLite database's header)."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError as exc:
        raise SearchError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _truncated(path: Path, what: str, size: int) -> str:
    """"SIZE of EXPECTED bytes" when the file is shorter than its header's page count says (the
    count is read only where the header marks it valid), else ""."""
    head = _read_head(path, what)
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and size < pages * page_size:
        return f"{size} of {pages * page_size} bytes"
    return ""


def inspect_sqlite(path: Path, what: str) -> SqliteFile:
    """Look at the SQLite database at `path` without changing or creating anything (read-only).

    SearchError, naming `what` ("the study database", "the MLflow database"), when it exists but
    is not a sound SQLite database: not a file, not SQLite (garbage, overwritten), shorter than
    its header says (truncated), or failing `PRAGMA quick_check` (up to QUICK_CHECK_BYTES; a
    larger file is checked by its header and schema only, so the cost stays a few reads)."""
    fix = "restore it from a backup, or use another --workdir"
    try:
        info = path.stat()
    except FileNotFoundError:
        return SqliteFile(path, exists=False)
    except OSError as exc:
        raise SearchError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SearchError(f"{path}: {what} is not a file; {fix}")
    if info.st_size == 0:
        return SqliteFile(path, exists=True)
    if not _read_head(path, what).startswith(_SQLITE_MAGIC):
        raise SearchError(f"{path}: {what} is not an SQLite database (corrupt or overwritten); "
                          f"{fix}")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=10, isolation_level=None)) as db:
            # A read transaction holds SQLite's shared lock: no writer commits while the header
            # and the file's size are compared, so a commit in flight never reads as truncated.
            db.execute("BEGIN")
            db.execute("PRAGMA schema_version").fetchone()
            size = path.stat().st_size
            truncated = _truncated(path, what, size)
            if truncated:
                raise SearchError(f"{path}: {what} is truncated ({truncated}); {fix}")
            tables = frozenset(row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"))
            if size <= QUICK_CHECK_BYTES:
                verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    raise SearchError(f"{path}: {what} is corrupt ({verdict}); {fix}")
            studies: tuple[str, ...] = ()
            if OPTUNA_TABLES <= tables:
                studies = tuple(row[0] for row in db.execute("SELECT study_name FROM studies"))
            db.execute("COMMIT")
    except sqlite3.OperationalError:
        # Locked past the timeout, or a hot journal a read-only connection cannot roll back:
        # nothing says it is corrupt; Optuna or MLflow opens it as they always did.
        return SqliteFile(path, exists=True, tables=None)
    except sqlite3.DatabaseError as exc:
        truncated = _truncated(path, what, path.stat().st_size)
        detail = f"is truncated ({truncated})" if truncated else f"is corrupt ({exc})"
        raise SearchError(f"{path}: {what} {detail}; {fix}") from None
    return SqliteFile(path, exists=True, tables=tables, studies=studies)


#: the extra or package that provides each database's driver
DRIVERS = {"postgresql": 'pip install "condsearch[postgres]"',
           "mysql": "pip install pymysql, and name it: mysql+pymysql://..."}


def check_database(url: str) -> None:
    """A SearchError in one line when a database URL's driver is not installed, or the database
    cannot be reached (a wrong host, a database that does not exist, refused credentials)."""
    if "://" not in url or url.startswith(("sqlite", "file:")):
        return
    from sqlalchemy import create_engine, exc

    shown = masked_url(url)
    try:
        engine = create_engine(url)
    except (ImportError, exc.NoSuchModuleError) as error:
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        how = DRIVERS.get(dialect, f"install the Python driver of {dialect}")
        raise SearchError(f"{shown}: its database driver is not installed ({error}); "
                          f"{how}") from None
    except exc.ArgumentError as error:
        raise SearchError(f"{shown}: not a database URL ({error})") from None
    try:
        with engine.connect():
            pass
    except exc.SQLAlchemyError as error:
        first = str(getattr(error, "orig", error)).strip().splitlines()
        raise SearchError(f"{shown}: cannot open the database ({first[0] if first else error}); "
                          "check the host, the database's name and the credentials") from None
    finally:
        engine.dispose()


def masked_url(url: str, unreadable: str | None = None) -> str:
    """A database URL with any password shown as ***; `unreadable` (default: the URL as given)
    when SQLAlchemy cannot read it."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads
        return url if unreadable is None else unreadable


def inspect_study_storage(storage: str) -> SqliteFile | None:
    """The study database behind an `sqlite:` storage URL, checked (`inspect_sqlite`), with a
    SearchError when it holds tables but not Optuna's; None for another kind of storage (whose
    driver and database are checked, `check_database`)."""
    if sqlite_file(storage) is None:
        check_database(storage)
    return _inspect_store(storage, "the study database", OPTUNA_TABLES, "Optuna study",
                          "--storage")


def inspect_tracking_store(uri: str) -> SqliteFile | None:
    """The MLflow database behind an `sqlite:` tracking URI, checked (`inspect_sqlite`), with a
    SearchError when it holds tables but not MLflow's; None for another kind of store."""
    return _inspect_store(uri, "the MLflow database", MLFLOW_TABLES, "MLflow", "--tracking-uri")


def _inspect_store(url: str, what: str, tables: frozenset[str], kind: str,
                   option: str) -> SqliteFile | None:
    found = sqlite_file(url)
    if found is None:
        return None
    db = inspect_sqlite(found[0], what)
    if db.tables and not tables <= db.tables:
        raise SearchError(f"{db.path}: not an {kind} database (an SQLite database without "
                          f"{kind.split()[0]}'s tables); use another {option} or --workdir")
    return db


def study_gone(db: SqliteFile, study_name: str, workdir: Path | str) -> SearchError:
    """The refusal when `condsearch.json` records `study_name` in `db` but `db` lacks it."""
    if not db.exists:
        what = "is missing"
    elif db.empty:
        what = "is empty"
    else:
        what = f"holds no study {study_name!r} (it holds: {', '.join(db.studies) or 'none'})"
    return SearchError(f"{db.path} {what}, but {Path(workdir) / STATE_FILE} records the study "
                       f"{study_name!r} there; restore it, or start a new study in this workdir "
                       "with search --new-study")


def _used(workdir: Path) -> bool:
    """Whether a search ran in `workdir` (it leaves its lock file)."""
    return (workdir / LOCK_FILE).exists()


def check_stores(workdir: Path, state: WorkdirState) -> None:
    """Refuse (SearchError, one line) a workdir whose recorded SQLite stores are corrupt,
    foreign, empty, or lack the recorded study; read-only.

    A missing file is refused only when it is the workdir's own and a search ran here (its lock
    file is there): a store recorded outside the workdir may live on another machine, and a
    state file alone (no search yet) names files its first search creates."""
    root = workdir.resolve()
    used = _used(workdir)
    study = inspect_study_storage(state.storage)
    if study is not None and study.tables is not None:
        own = path_inside(study.path, root) is not None
        missing_ok = not study.exists and not (own and used)
        if not missing_ok and state.study_name not in study.studies:
            raise study_gone(study, state.study_name, workdir)
    tracking = inspect_tracking_store(state.tracking_uri)
    if tracking is not None and path_inside(tracking.path, root) is not None and used:
        if not tracking.exists or tracking.empty:
            raise tracking_gone(tracking, state, workdir)


def tracking_gone(db: SqliteFile, state: WorkdirState, workdir: Path | str) -> SearchError:
    """The refusal when the recorded MLflow database is missing or empty."""
    what = "is missing" if not db.exists else "is empty"
    return SearchError(f"{db.path} {what}, but {Path(workdir) / STATE_FILE} records the MLflow "
                       f"experiment {state.experiment_name or state.experiment_id!r} there; "
                       "restore it, or use another --workdir")


# ---- a moved or copied workdir's MLflow artifact root --------------------------------------------


def follow_move(workdir: Path, tracking_uri: str) -> list[str]:
    """Point the artifact locations of the workdir's own MLflow database at its own
    `mlartifacts/` when they still name another directory's (the workdir was moved or copied);
    return the old roots replaced.

    MLflow records an experiment's artifact root, and each run's, absolute. A root `X/mlartifacts`
    with X not this workdir is taken for this workdir's former place when X is gone (moved) or
    holds an MLflow database of its own of the same name (the original of a copy); any other
    root (a server's, a folder the user chose) is left alone. Only the workdir's own database
    is written, never X's files. Costs one read-only query when nothing moved."""
    found = sqlite_file(tracking_uri)
    root = workdir.resolve()
    if found is None or path_inside(found[0], root) is None or not found[0].is_file():
        return []
    path = found[0]
    new_root = (root / ARTIFACTS_DIR).as_uri()
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=10)) as db:
            locations = [row[0] for row in db.execute(
                "SELECT artifact_location FROM experiments")]
    except sqlite3.Error:
        return []
    old_roots = []
    for location in locations:
        old = _file_uri_path(location or "")
        if old is None or old.name != ARTIFACTS_DIR or location.rstrip("/") == new_root:
            continue
        former = old.parent
        if os.path.normpath(former) == str(root) or _same_dir(former, root):
            continue
        if not former.exists() or (former / path.name).is_file():
            old_roots.append(location.rstrip("/"))
    if not old_roots:
        return []
    try:
        with closing(sqlite3.connect(str(path), timeout=30)) as db, db:
            columns = {(table, column) for table, column in _ARTIFACT_COLUMNS if column in {
                row[1] for row in db.execute(f"PRAGMA table_info({table})")}}
            for old in sorted(set(old_roots)):
                for table, column in sorted(columns):
                    db.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (new_root, len(old) + 1, old, len(old) + 1, old + "/"))
    except sqlite3.Error:  # a read-only workdir: reading goes on; artifacts stay where they were
        return []
    return sorted(set(old_roots))


# ---- reading a workdir ---------------------------------------------------------------------------


def state_from_storage(storage: str, study_name: str | None = None) -> WorkdirState:
    """A search's state read from its study database alone (no workdir needed): what
    `pareto` and `export` use on a machine that reaches the study storage and MLflow."""
    import optuna

    db = inspect_study_storage(storage)
    if db is not None and db.tables is not None and not db.studies:
        state = "no such file" if not db.exists else "no study in it"
        raise SearchError(f"{storage}: {state}; name the study database a search wrote")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = list(db.studies) if db is not None and db.tables is not None else (
        optuna.get_all_study_names(storage))
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
    recorded = data.get("storage") if isinstance(data, dict) else None
    state = _checked_state({**data, "storage": storage} if isinstance(data, dict) else data,
                           f"the study {study_name!r}'s {ATTR_WORKDIR_STATE} attribute")
    state = _moved_with_storage(state, recorded)
    inspect_tracking_store(state.tracking_uri)
    return state


def _moved_with_storage(state: WorkdirState, recorded: Any) -> WorkdirState:
    """A state read from a study database that was moved with its workdir: MLflow stores that
    sat beside the study where it was recorded are read beside it where it is now."""
    was, now = (sqlite_file(recorded) if isinstance(recorded, str) else None,
                sqlite_file(state.storage))
    if was is None or now is None or not was[0].is_absolute():
        return state
    old, new = was[0].parent, now[0].resolve().parent
    if os.path.normpath(old) == str(new) or _same_dir(old, new):
        return state
    moved = _rebase(state.tracking_uri, old, new)
    path = _store_path(moved)
    if moved != state.tracking_uri and path is not None and path.exists():
        state.tracking_uri = moved
        follow_move(new, moved)
    return state


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
    """The state a search left in `workdir`, its stores checked and read where the workdir is
    now (`follow_move`); SearchError when there is none, or it or a store is damaged."""
    if isinstance(workdir, WorkdirState):
        return workdir
    check_workdir(workdir)
    state = read_state(workdir)
    if state is None:
        raise SearchError(
            f"{workdir}: no search here (no {STATE_FILE}); run `condsearch search SPACE.yaml "
            f"--workdir {workdir}` first"
        )
    check_stores(Path(workdir), state)
    follow_move(Path(workdir), state.tracking_uri)
    return state


class WorkdirLock:
    """An exclusive lock so two searches never drive the same study from one workdir."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LOCK_FILE
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
