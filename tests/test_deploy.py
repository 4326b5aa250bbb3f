"""The cluster recipe in deploy/ runs as written: every path its files name is there, and the
wheel it ships works in a fresh virtualenv.

The manifests are parsed, not listed here: the `file_mounts` of the `ray up` cluster, the
Dockerfile's COPY sources (and its ignore file, which must keep them), the search spaces that
commands and entrypoints run (mapped back through whatever copies them: a file mount, a COPY), every
`deploy/...` reference and every relative link of deploy/README.md. The slow test builds the
wheel from the checkout, installs it with torch into a new virtualenv and runs it from outside
the checkout, as a cluster node would.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def deploy_texts() -> dict[Path, str]:
    """Every text file of deploy/ (deploy/README.md included), by path."""
    texts = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            try:
                texts[path] = path.read_text()
            except UnicodeDecodeError:
                continue
    return texts


def manifests() -> dict[Path, dict]:
    """The YAML manifests of deploy/, parsed."""
    found = {}
    for path in sorted(DEPLOY.glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        assert isinstance(doc, dict), f"{path.name} is not a YAML mapping"
        found[path] = doc
    return found


def machine_path(path: str) -> bool:
    """A path on some machine (home or absolute), not one in the repository."""
    return path.startswith(("~", "/"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    out = []
    for entry in logical:
        word, _, rest = entry.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context (not `--from` a stage)."""
    copies = []
    for word, rest in dockerfile_instructions():
        if word not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        assert len(paths) >= 2, f"Dockerfile: {word} {rest!r} has no source and destination"
        copies.append((paths[:-1], paths[-1]))
    return copies


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (`*`, `?`, `**`) as a regex over a context-relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `relative` out of the build context: the last pattern that matches
    the path or a folder above it decides, `!` patterns taking it back in."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            ignored = not keep
    return ignored


def file_mounts() -> list[tuple[Path, str, str]]:
    """(manifest, remote path, local path) of every `file_mounts` entry in deploy/."""
    mounts = []
    for path, doc in manifests().items():
        for remote, local in (doc.get("file_mounts") or {}).items():
            mounts.append((path, str(remote), str(local)))
    return mounts


def built_outputs() -> set[str]:
    """The folders the deploy files' build commands write (`pip wheel ... -w DIR`), relative to
    the repository root: a file mount may copy these before they exist in a clone."""
    found = set()
    for text in deploy_texts().values():
        for match in re.finditer(r"pip wheel\b[^\n]*?\s(?:-w|--wheel-dir)[ =](\S+)", text):
            if not machine_path(match.group(1)):  # not a build inside the image
                found.add(match.group(1).removeprefix("./").rstrip("/"))
    return found


def copied_prefixes() -> list[tuple[str, str]]:
    """(where a copy lands, its source in the repository): the Dockerfile's COPYs and the file
    mounts, so a path a command names on a node or in the image maps back to the checkout."""
    pairs = []
    for sources, dest in dockerfile_copies():
        if len(sources) == 1:
            pairs.append((dest.rstrip("/"), sources[0].rstrip("/")))
    for _, remote, local in file_mounts():
        if not machine_path(local):
            pairs.append((remote.rstrip("/"), local.removeprefix("./").rstrip("/")))
    return pairs


def in_repository(named: str) -> Path | None:
    """The checkout path behind a path a command names, or None when nothing copies it there."""
    if not machine_path(named):
        return ROOT / named.removeprefix("./")
    for dest, source in copied_prefixes():
        if named == dest or named.startswith(dest + "/"):
            return ROOT / source / named[len(dest):].lstrip("/")
    return None


# ---- (a) every path the deploy files name exists ---------------------------------------------

def test_the_file_mounts_copy_paths_of_the_repository_or_of_its_build():
    mounts = file_mounts()
    assert mounts, "no manifest in deploy/ has file_mounts"
    outputs = built_outputs()
    for manifest, remote, local in mounts:
        if machine_path(local):
            continue  # a file of the user's machine (the Ray token), not of the repository
        relative = local.removeprefix("./").rstrip("/")
        assert (ROOT / relative).exists() or relative in outputs, (
            f"{manifest.name}: file_mounts {remote}: {local} is neither in the repository nor "
            f"written by a build command of deploy/ (those write {sorted(outputs)})")


def test_the_setup_commands_install_the_wheel_from_a_mounted_build_folder():
    outputs = built_outputs()
    assert outputs, "no deploy file says how to build the wheel (pip wheel ... -w DIR)"
    for manifest, doc in manifests().items():
        if "file_mounts" not in doc:
            continue
        mounted = {remote.rstrip("/"): local.removeprefix("./").rstrip("/")
                   for remote, local in doc["file_mounts"].items()}
        commands = "\n".join(str(c) for key, value in doc.items() if key.endswith("commands")
                             for c in value or [])
        wheels = re.findall(r"(\S+)/condsearch-\*\.whl", commands)
        assert wheels, f"{manifest.name}: no setup command installs a condsearch wheel"
        for folder in wheels:
            folder = folder.lstrip("\"'")
            assert folder in mounted, f"{manifest.name}: {folder} is not a file_mounts destination"
            assert mounted[folder] in outputs, (
                f"{manifest.name}: {folder} is mounted from {mounted[folder]}, which no build "
                "command of deploy/ writes")


def test_the_dockerfile_copies_what_the_repository_has_and_its_context_keeps():
    copies = dockerfile_copies()
    assert copies, "deploy/Dockerfile copies nothing from the build context"
    patterns = dockerignore_patterns()
    for sources, dest in copies:
        for source in sources:
            matches = list(ROOT.glob(source.rstrip("/")))
            assert matches, f"Dockerfile: COPY {source} {dest}: no {source} in the repository"
            for match in matches:
                relative = match.relative_to(ROOT).as_posix()
                assert not dockerignored(relative, patterns), (
                    f"Dockerfile: COPY {source}: {DOCKERIGNORE.name} leaves {relative} out of "
                    "the build context")
    if patterns:  # the ignore file is there to keep the local state out of the image
        assert dockerignored(".venv", patterns) and dockerignored("runs", patterns)


def test_the_docker_build_commands_name_the_dockerfile_from_the_repository_root():
    builds = [m for text in deploy_texts().values()
              for m in re.finditer(r"docker build\b(?:\\\n|[^\n])*", text)]
    assert builds, "no deploy file says how to build the image"
    for match in builds:
        command = match.group(0)
        named = re.search(r"-f\s+(\S+)", command)
        assert named and (ROOT / named.group(1)).is_file(), command


def test_every_search_space_a_deploy_file_names_exists_where_it_is_copied_from():
    pattern = re.compile(r"(?<![\w./~-])((?:~/|/)?(?:[\w.-]+/)*search_spaces/[\w.*-]+\.ya?ml)")
    named = {(path, m.group(1)) for path, text in deploy_texts().items()
             for m in pattern.finditer(text)}
    assert named, "no deploy file names a search space"
    for path, space in sorted(named):
        source = in_repository(space)
        assert source is not None, (
            f"{path.relative_to(ROOT)}: {space} is on a node or in the image, but no file "
            "mount or COPY puts search_spaces there")
        assert list(source.parent.glob(source.name)), (
            f"{path.relative_to(ROOT)}: {space} (from {source.relative_to(ROOT)}) is not in "
            "the repository")


def test_the_rayjob_entrypoint_runs_a_space_the_image_holds():
    for path, doc in manifests().items():
        if doc.get("kind") != "RayJob":
            continue
        words = shlex.split(doc["spec"]["entrypoint"])
        spaces = [a for a in words if a.endswith((".yaml", ".yml"))]
        assert spaces, f"{path.name}: the entrypoint runs no search space"
        for space in spaces:
            source = in_repository(space)
            assert source is not None and source.is_file(), (
                f"{path.name}: {space} is not copied into the image by deploy/Dockerfile")


def test_every_deploy_reference_and_relative_link_exists():
    texts = deploy_texts()
    texts[ROOT / "README.md"] = (ROOT / "README.md").read_text()
    refs = {(path, m.group(0)) for path, text in texts.items()
            for m in re.finditer(r"(?<![\w./-])deploy/[\w./-]*[\w-]", text)}
    assert refs
    for path, ref in sorted(refs):
        assert (ROOT / ref).exists(), f"{path.relative_to(ROOT)} names {ref}, which is missing"
    readme = DEPLOY / "README.md"
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    assert links
    for link in links:
        target = link.split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        assert (readme.parent / target).exists(), f"deploy/README.md links to missing {link}"


def test_the_ray_cluster_config_passes_the_launchers_own_check():
    # What `ray up` checks before it starts anything; Ray keeps it in a private module, so the
    # test skips (rather than fails) if Ray moves it.
    util = pytest.importorskip("ray.autoscaler._private.util")
    clusters = [doc for doc in manifests().values() if "available_node_types" in doc]
    assert clusters, "no cluster launcher config in deploy/"
    for doc in clusters:
        util.validate_config(util.prepare_config(doc))


# ---- (b) the wheel installs and works outside the checkout ------------------------------------

def run(command: list, *, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    assert done.returncode == 0, (
        f"{shlex.join(str(c) for c in command)} exited {done.returncode}\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and untracked but not ignored): no build/,
    .venv or caches, so stale build output cannot leak into the wheel."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        names = [n for n in listed.stdout.split("\0") if n]
    else:  # not a git checkout: what the build needs
        names = ["pyproject.toml", "README.md",
                 *(p.relative_to(ROOT).as_posix() for p in (ROOT / "condsearch").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)]
    for name in names:
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def build_wheel(source: Path, dist: Path) -> Path:
    """`pip wheel --no-deps -w DIST .`, as the recipe builds it; without build isolation when this
    interpreter has setuptools (no download), else with it (setuptools from the package index)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, "."]
    try:
        import setuptools  # noqa: F401
        command.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    run(command, cwd=source, timeout=900)
    wheels = list(dist.glob("condsearch-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def check_wheel_contents(wheel: Path, source: Path) -> None:
    """The package data and metadata a node needs: every module, py.typed, the entry points
    pyproject.toml declares, and the extras the recipe installs."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(source).as_posix() for p in (source / "condsearch").rglob("*.py")}
    assert modules and not modules - names, f"modules missing from the wheel: {modules - names}"
    assert "condsearch/py.typed" in names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as archive:
        entry_text = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    entry = configparser.ConfigParser()
    entry.optionxform = str  # keep names as written
    entry.read_string(entry_text)
    assert entry["condsearch.backbones"]["conv_net"] == \
        "condsearch.space.declared.conv_net:CONV_NET"
    assert entry["condsearch.samplers"]["nni"] == "condsearch.interop._nni_sampler:nni_sampler"
    assert entry["console_scripts"]["condsearch"] == "condsearch.cli:main"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    for group, points in project.get("entry-points", {}).items():
        assert dict(entry[group]) == points, group
    for extra in ("ray", "postgres"):
        assert f"Provides-Extra: {extra}" in metadata, extra


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs_outside_the_checkout(tmp_path):
    times = {}
    started = time.monotonic()
    source = copy_checkout(tmp_path / "checkout")
    wheel = build_wheel(source, tmp_path / "dist")
    check_wheel_contents(wheel, source)
    times["build the wheel"] = time.monotonic() - started

    mark = time.monotonic()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python, bindir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    run([python, "-m", "pip", "install", "-q", f"{wheel}[postgres]", "torch==2.13.0"],
        env=env, cwd=tmp_path, timeout=1800)
    times["venv + pip install"] = time.monotonic() - mark

    mark = time.monotonic()
    work = tmp_path / "work"
    work.mkdir()
    # what the nodes run, from outside the checkout
    assert "validate" in run([bindir / "condsearch", "--help"], env=env, cwd=work).stdout
    for name in ("digits_early_exit.yaml",        # the quick start's space
                 "fashion_conv_early_exit.yaml"):  # conv_net: the wheel's backbone entry point
        shutil.copy(ROOT / "search_spaces" / name, work / name)
        out = run([bindir / "condsearch", "validate", name], env=env, cwd=work).stdout
        assert f"{name}: ok" in out, out
    probe = (
        "import json, sys, condsearch, torch\n"
        "from importlib.metadata import entry_points\n"
        "import sqlalchemy\n"
        "for url in ('postgresql://u@127.0.0.1/db', 'postgresql+psycopg://u@127.0.0.1/db',\n"
        "            'postgresql+psycopg2://u@127.0.0.1/db'):\n"
        "    sqlalchemy.create_engine(url)  # imports the dialect's driver; connects to nothing\n"
        "print(json.dumps({'file': condsearch.__file__, 'prefix': sys.prefix,\n"
        "    'torch': torch.__version__, 'path': sys.path,\n"
        "    'backbones': sorted(e.name for e in entry_points(group='condsearch.backbones'))}))\n")
    seen = json.loads(run([python, "-c", probe], env=env, cwd=work).stdout)
    installed = Path(seen["file"]).resolve()
    assert installed.is_relative_to(venv.resolve()) and "site-packages" in installed.parts, seen
    assert not installed.is_relative_to(ROOT), seen
    assert not any(Path(p).resolve() == ROOT for p in seen["path"] if p), seen["path"]
    assert seen["torch"].split("+")[0] == "2.13.0"
    assert "conv_net" in seen["backbones"]
    times["checks in the venv"] = time.monotonic() - mark
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
