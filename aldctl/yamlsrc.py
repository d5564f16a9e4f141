"""YAML with source positions.

PyYAML's composer already knows where every node starts; we keep that in a small located
tree (:class:`Map`, :class:`Seq`, :class:`Scalar`) so that every later error, however deep,
can say ``file:line:col``. Duplicate keys, which PyYAML silently lets the last one win, are
errors here: in a recipe they are always a mistake.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aldctl.diagnostics import Diagnostic, Location, Severity, UserError

MAX_FILE_BYTES = 2 * 1024 * 1024

try:  # the C parser is ~10x faster; fall back where libyaml is missing
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment,unused-ignore]
except AttributeError:  # pragma: no cover - depends on the platform build
    _Loader = yaml.SafeLoader


@dataclass(frozen=True, slots=True)
class Scalar:
    value: Any
    """str, int, float, bool or None, as YAML 1.1 resolves it."""
    loc: Location
    text: str
    """The scalar as written (``"15 ms"``, ``"on"``)."""
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    loc: Location

    def __iter__(self) -> Iterator[Node]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Map:
    entries: tuple[tuple[Scalar, Node], ...]
    loc: Location
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for i, (k, _) in enumerate(self.entries):
            self._index.setdefault(str(k.value), i)

    def get(self, key: str) -> Node | None:
        i = self._index.get(key)
        return None if i is None else self.entries[i][1]

    def key_loc(self, key: str) -> Location:
        i = self._index.get(key)
        return self.loc if i is None else self.entries[i][0].loc

    def keys(self) -> list[str]:
        return [str(k.value) for k, _ in self.entries]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self.entries)


Node = Scalar | Seq | Map


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Diagnostic] = []
        self._constructor = _Loader("")

    def build(self, node: yaml.Node) -> Node:
        loc = _loc(self.file, node)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.problems.append(Diagnostic(Severity.ERROR, f"bad value: {exc}", loc))
                value = node.value
            # YAML 1.1 turns dates into datetime objects; a recipe never means that.
            if not isinstance(value, str | int | float | bool | type(None)):
                value = node.value
            return Scalar(value, loc, node.value, quoted=node.style in ("'", '"'))
        if isinstance(node, yaml.SequenceNode):
            return Seq(tuple(self.build(n) for n in node.value), loc)
        if isinstance(node, yaml.MappingNode):
            entries: list[tuple[Scalar, Node]] = []
            seen: dict[str, Location] = {}
            for knode, vnode in node.value:
                key = self.build(knode)
                if not isinstance(key, Scalar):
                    self.problems.append(
                        Diagnostic(Severity.ERROR, "a key must be a plain word", key.loc)
                    )
                    continue
                name = str(key.value)
                if name in seen:
                    first = seen[name]
                    self.problems.append(
                        Diagnostic(
                            Severity.ERROR,
                            f"duplicate key '{name}' (first at line {first.line})",
                            key.loc,
                            "YAML keeps only the last one; merge them",
                        )
                    )
                    continue
                seen[name] = key.loc
                entries.append((key, self.build(vnode)))
            return Map(tuple(entries), loc)
        raise AssertionError(f"unexpected YAML node {node!r}")


def parse_text(text: str, file: str) -> Node | None:
    """Parse YAML text into a located tree; None for an empty document."""
    builder = _Builder(file)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(
            Diagnostic(Severity.ERROR, f"YAML syntax: {problem}", loc, _yaml_hint(problem))
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(
            Diagnostic(Severity.ERROR, f"YAML syntax: {exc}", Location(file, 1, 1))
        ) from None
    if root is None:
        return None
    tree = builder.build(root)
    if builder.problems:
        raise UserError(builder.problems)
    return tree


def _yaml_hint(problem: str) -> str:
    if "tab" in problem:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' needs quotes, or a key is mis-indented"
    if "could not find expected ':'" in problem:
        return "a key is missing its ':' or the indentation is off"
    return ""


def read_source(path: Path) -> str:
    """Read a YAML file as text, refusing binaries and absurd sizes with a located error."""
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            Diagnostic(Severity.ERROR, f"no such file: {name}", hint="check the path")
        ) from None
    except IsADirectoryError:
        raise UserError(Diagnostic(Severity.ERROR, f"{name} is a directory, not a file")) from None
    except OSError as exc:
        raise UserError(Diagnostic(Severity.ERROR, f"cannot read {name}: {exc.strerror}")) from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(
            Diagnostic(
                Severity.ERROR,
                f"file is {len(data) / 1e6:.1f} MB; a recipe or config is at most "
                f"{MAX_FILE_BYTES // (1024 * 1024)} MB",
                Location(name, 1, 1),
                "is this the right file?",
            )
        )
    if b"\x00" in data[:8192]:
        raise UserError(
            Diagnostic(
                Severity.ERROR,
                "binary file, not a YAML text file",
                Location(name, 1, 1),
                "recipes and configs are YAML text",
            )
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise UserError(
            Diagnostic(
                Severity.ERROR,
                "not valid UTF-8 text",
                Location(name, line, col),
                "save the file as UTF-8",
            )
        ) from None


def load_file(path: Path) -> Node | None:
    return parse_text(read_source(path), str(path))
