"""The key reference of docs/search-space.md, rendered from the declarations (no hand-kept tables).

`reference_markdown()` renders one table per built-in backbone and component (and `conv_net`,
found through the backbone registry as an installed package's entry point would be) and one for
`train:`: key | type | default | range | meaning, then each one's inference knobs, what it hosts
or excludes. `python -m condsearch.space._reference` rewrites the block between the markers in
docs/search-space.md; `tests/test_docs_reference.py` fails when the two differ.
Like the rest of `condsearch.space`, it imports no torch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from condsearch.space._declaration import Backbone, Component
from condsearch.space._distributions import ParamSpec
from condsearch.space._registry import find_backbone
from condsearch.space._schema import TRAIN_PARAMS
from condsearch.space.declared import BUILTIN_BACKBONES, BUILTIN_COMPONENTS

BEGIN = "<!-- reference:begin -->"
END = "<!-- reference:end -->"
#: the document that holds the rendered block, from the repository root
DOC = Path(__file__).resolve().parents[2] / "docs" / "search-space.md"
COMMAND = "python -m condsearch.space._reference"

#: what a `train:` key means, for the keys whose declaration (`TRAIN_PARAMS`) carries no `doc`;
#: a declaration's own `doc` always wins
_KIND_WORDS = {"int": "int", "float": "float", "bool": "bool", "enum": "enum",
               "int_list": "list of int", "str": "string", "any": "any"}


def _value(value: Any) -> str:
    """A value as a search-space file writes it (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "E" in text:  # YAML 1.1 reads 1e-05 as text; it wants 1.0e-05
            mantissa, exponent = text.lower().split("e")
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            sign = "" if exponent.startswith(("-", "+")) else "+"
            text = f"{mantissa}e{sign}{exponent}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and math.isfinite(x) else repr(float(x))


def _type(spec: ParamSpec) -> str:
    word = _KIND_WORDS.get(spec.kind, spec.kind)
    return f"{word} or null" if spec.nullable else word


def _default(spec: ParamSpec) -> str:
    return "required" if spec.required else f"`{_value(spec.default)}`"


def _bounds(spec: ParamSpec) -> str:
    """The interval a number must lie in: `[0, 1)`, `(0, 1]`, `≥ 1`, `> 0`; `—` when unbounded."""
    lo, hi = spec.lo, spec.hi
    if lo is not None and hi is not None:
        return (f"{'(' if spec.lo_open else '['}{_number(lo)}, "
                f"{_number(hi)}{')' if spec.hi_open else ']'}")
    if lo is not None:
        return f"{'>' if spec.lo_open else '≥'} {_number(lo)}"
    if hi is not None:
        return f"{'<' if spec.hi_open else '≤'} {_number(hi)}"
    return "—"


def _range(spec: ParamSpec) -> str:
    if spec.kind == "enum":
        return ", ".join(f"`{v}`" for v in spec.values)
    if spec.kind in ("int", "float"):
        return _bounds(spec)
    if spec.kind == "int_list":
        bounds = _bounds(spec)
        return "non-empty" + ("" if bounds == "—" else f", items {bounds}")
    if spec.kind == "str":
        return "non-empty"
    return "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "—"


def key_table(params: Mapping[str, ParamSpec]) -> str:
    """A markdown table of declared keys: key | type | default | range | meaning."""
    rows = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
    for key, spec in params.items():
        rows.append(f"| `{key}` | {_type(spec)} | {_default(spec)} | {_cell(_range(spec))} | "
                    f"{_cell(spec.doc)} |")
    return "\n".join(rows)


def _values_in(spec: ParamSpec) -> str:
    """`float in (0, 1]` or `float > 0`: the values a swept knob may take."""
    bounds = _range(spec)
    return f"{_type(spec)} in {bounds}" if bounds[:1] in "([" else f"{_type(spec)} {bounds}"


def _knobs(prefix: str, knobs: Mapping[str, ParamSpec]) -> str:
    if not knobs:
        return "none"
    return "; ".join(f"`{prefix}.{name}` ({_values_in(spec)})" for name, spec in knobs.items())


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none"


def _code(path: str) -> str:
    return f"`{path}`" if path else "—"


_ORIGINS = {"builtin": "built in (`condsearch/space/declared/`)",
            "entry point": "the `condsearch.backbones` entry point",
            "registered": "`condsearch.register_backbone`", "import path": "its import path"}


def backbone_section(decl: Backbone) -> str:
    where = "`model`" if decl.section is None else f"`model.{decl.section}`"
    return "\n".join([
        f"### `{decl.name}` keys",
        "",
        f"Backbone `{decl.name}`: {decl.doc}.",
        "",
        key_table(decl.params),
        "",
        f"- keys under: {where}",
        f"- declared through: {_ORIGINS[decl.origin]}",
        f"- factory: {_code(decl.factory_path or '')}",
        f"- inference knobs (sweepable): {_knobs(decl.section or decl.name, decl.knobs)}",
        f"- hosts components: {_names(decl.hosts)}",
        "- undeclared keys: " + ("refused (strict)" if decl.strict
                                 else "sampled and passed to the factory as written"),
    ])


def component_section(comp: Component) -> str:
    excludes = (f"{_names(comp.excludes)} (off, and not sampled, while `{comp.name}` is on)"
                if comp.excludes else "none")
    return "\n".join([
        f"### `{comp.name}` keys",
        "",
        f"Component `{comp.name}` (`model.components.{comp.name}`): {comp.doc}.",
        "",
        key_table(comp.params),
        "",
        f"- block: {_code(comp.block)}",
        f"- hosted by: {_names(_hosts_of(comp.name))}",
        f"- inference knobs (sweepable): {_knobs(comp.name, comp.knobs)}",
        f"- excludes: {excludes}",
    ])


def _documented_backbones() -> list[Backbone]:
    """The built-in backbones, then `conv_net` as the registry finds it (its entry point)."""
    conv_net = find_backbone("conv_net")
    assert conv_net is not None  # a name, not an import path: never left untrusted
    return [*BUILTIN_BACKBONES.values(), conv_net]


def _hosts_of(component: str) -> list[str]:
    return [b.name for b in _documented_backbones() if component in b.hosts]


def knob_summary() -> str:
    """Every sweepable knob of the documented backbones and components, in one table."""
    rows = ["| knob | values | of |", "|---|---|---|"]
    for comp in BUILTIN_COMPONENTS.values():
        for name, spec in comp.knobs.items():
            rows.append(f"| `{comp.name}.{name}` | {_cell(_values_in(spec))} | "
                        f"component `{comp.name}` |")
    for decl in _documented_backbones():
        for name, spec in decl.knobs.items():
            rows.append(f"| `{decl.knob_key(name)}` | {_cell(_values_in(spec))} | "
                        f"backbone `{decl.name}` |")
    return "\n".join(rows)


def reference_markdown() -> str:
    """The generated reference: each backbone's and component's keys, `train:`, the knobs."""
    parts = [
        f"<!-- Generated from the declarations by `{COMMAND}`; do not edit by hand. -->",
        *(backbone_section(b) for b in _documented_backbones()),
        *(component_section(c) for c in BUILTIN_COMPONENTS.values()),
        "\n".join(["### `train` keys", "",
                   "The `train:` section (`TRAIN_PARAMS`); any key may be a distribution.", "",
                   key_table(TRAIN_PARAMS)]),
        "\n".join(["### Inference knobs", "", knob_summary()]),
    ]
    return "\n\n".join(parts) + "\n"


def split_document(text: str) -> tuple[str, str, str]:
    """(before BEGIN, the block between the markers, from END on); ValueError without markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {BEGIN} ... {END} block")
    start += len(BEGIN)
    return text[:start], text[start:end], text[end:]


def rendered_block(text: str) -> str:
    """The block currently between the markers, without the newlines that frame it."""
    return split_document(text)[1].strip("\n") + "\n"


def rewrite(path: Path = DOC) -> bool:
    """Write `reference_markdown()` between the markers of `path`; True when it changed."""
    text = path.read_text(encoding="utf-8")
    before, _, after = split_document(text)
    new = f"{before}\n{reference_markdown()}{after}"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DOC
    changed = rewrite(path)
    print(f"{path}: reference {'rewritten' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
