"""YAML with source positions.

PyYAML's composer already knows where every node starts; we keep that in a small located
tree (:class:`Map`, :class:`Seq`, :class:`Scalar`) so that every later error, however deep,
can say ``file:line:col``. Duplicate keys, which PyYAML silently lets the last one win, are
errors here: in a recipe they are always a mistake.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aldctl.diagnostics import (
    Diagnostic,
    Location,
    Severity,
    UserError,
    hide_quoted,
    neutralise,
    plain_word,
)

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists: a recipe needs ~8; PyYAML and every recursive walk
after it would otherwise run out of stack at a few hundred."""
MAX_NODES = 200_000
"""Nodes after alias expansion: a 715-byte "billion laughs" file expands to billions."""
MAX_ALIASES = 1_000

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
        self._nodes = 0
        self._path: set[int] = set()
        return self._build(node, 0)

    def _build(self, node: yaml.Node, depth: int) -> Node:
        loc = _loc(self.file, node)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    f"the document expands to more than {MAX_NODES:,} values "
                    "(aliases repeating aliases?)",
                    loc,
                    "write the values out; a recipe never needs this many",
                )
            )
        if depth > MAX_DEPTH:
            raise UserError(_too_deep(loc))
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                problem = hide_quoted(str(getattr(exc, "problem", None) or exc))
                self.problems.append(Diagnostic(Severity.ERROR, f"bad value: {problem}", loc))
                value = node.value
            # YAML 1.1 turns dates into datetime objects; a recipe never means that.
            if not isinstance(value, str | int | float | bool | type(None)):
                value = node.value
            text = node.value
            if isinstance(value, str):
                # "\e[2J" in a double-quoted scalar is a real escape sequence; recipe text
                # reaches terminals (errors, progress line, console), so it is made visible.
                value = neutralise(value)
                text = neutralise(text)
            return Scalar(value, loc, text, quoted=node.style in ("'", '"'))
        if id(node) in self._path:
            # An alias inside its own anchor: a document that never ends.
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    "an alias refers to a node that contains it (a recursive alias)",
                    loc,
                    "an anchor (&name) cannot be used (*name) inside itself",
                )
            )
        self._path.add(id(node))
        try:
            return self._collection(node, loc, depth)
        finally:
            self._path.discard(id(node))

    def _collection(self, node: yaml.Node, loc: Location, depth: int) -> Node:
        if isinstance(node, yaml.SequenceNode):
            return Seq(tuple(self._build(n, depth + 1) for n in node.value), loc)
        if isinstance(node, yaml.MappingNode):
            entries: list[tuple[Scalar, Node]] = []
            seen: dict[str, Location] = {}
            for knode, vnode in node.value:
                key = self._build(knode, depth + 1)
                if not isinstance(key, Scalar):
                    self.problems.append(
                        Diagnostic(Severity.ERROR, "a key must be a plain word", key.loc)
                    )
                    continue
                name = str(key.value)
                if name in seen:
                    first = seen[name]
                    what = f"key '{name}'" if plain_word(name) else "key (not shown)"
                    self.problems.append(
                        Diagnostic(
                            Severity.ERROR,
                            f"duplicate {what} (first at line {first.line})",
                            key.loc,
                            "YAML keeps only the last one; merge them",
                        )
                    )
                    continue
                seen[name] = key.loc
                entries.append((key, self._build(vnode, depth + 1)))
            return Map(tuple(entries), loc)
        raise AssertionError(f"unexpected YAML node {node!r}")


def _too_deep(loc: Location) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR,
        f"nested more than {MAX_DEPTH} levels deep",
        loc,
        "a recipe or config needs a handful of levels; is a bracket unclosed?",
    )


def _mark_loc(file: str, mark: Any) -> Location:
    if mark is None:
        return Location(file, 1, 1)
    return Location(file, int(mark.line) + 1, int(mark.column) + 1)


def _prescan(text: str, file: str) -> None:
    """Bound nesting depth and alias count on the event stream, which PyYAML produces
    without recursion, before the (recursive) composer sees the document."""
    depth = 0
    aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(_too_deep(_mark_loc(file, event.start_mark)))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise UserError(
                    Diagnostic(
                        Severity.ERROR,
                        f"more than {MAX_ALIASES:,} aliases (*name) in one document",
                        _mark_loc(file, event.start_mark),
                        "write the values out",
                    )
                )


def parse_text(text: str, file: str) -> Node | None:
    """Parse YAML text into a located tree; None for an empty document.

    Bounded before anything grows: size (callers read at most :data:`MAX_FILE_BYTES`),
    nesting depth and aliases on the event stream, nodes after alias expansion in the
    builder. Each limit is a located error, never an internal one."""
    builder = _Builder(file)
    if len(text) > MAX_FILE_BYTES:
        raise UserError(_too_big(len(text), file))
    try:
        _prescan(text, file)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        # PyYAML quotes pieces of the file (an alias, a tag); the file may not be ours.
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(
            Diagnostic(
                Severity.ERROR, f"YAML syntax: {hide_quoted(problem)}", loc, _yaml_hint(problem)
            )
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(
            Diagnostic(
                Severity.ERROR, f"YAML syntax: {hide_quoted(str(exc))}", Location(file, 1, 1)
            )
        ) from None
    except RecursionError:  # pragma: no cover - the prescan bounds depth first
        raise UserError(_too_deep(Location(file, 1, 1))) from None
    if root is None:
        return None
    tree = builder.build(root)
    if builder.problems:
        raise UserError(builder.problems)
    return tree


def is_document_of(tree: Node | None, top_keys: Iterable[str]) -> bool:
    """Whether ``tree`` can be the document a loader expects: empty, or a mapping with at
    least one of its top-level keys. Anything else (a password file, a key, a CSV read by
    mistake) is refused by :func:`not_a_document` without a word of what it holds."""
    if tree is None:
        return True
    return isinstance(tree, Map) and any(k in tree for k in top_keys)


def not_a_document(file: str, what: str, shape: str) -> UserError:
    """The one error for a file that is not ``what``: located at 1:1, content never shown
    (its unknown keys would be its lines)."""
    return UserError(
        Diagnostic(
            Severity.ERROR,
            f"not {what}: {shape}",
            Location(file, 1, 1),
            "is this the right file?",
        )
    )


def count_nodes(tree: Node | None) -> int:
    """Values in a located tree (scalars, lists, mappings and keys), without recursion."""
    n = 0
    todo: list[Node] = [] if tree is None else [tree]
    while todo:
        node = todo.pop()
        n += 1
        if isinstance(node, Seq):
            todo.extend(node.items)
        elif isinstance(node, Map):
            n += len(node.entries)
            todo.extend(v for _, v in node.entries)
    return n


def _yaml_hint(problem: str) -> str:
    if "nesting depth" in problem:
        return f"a recipe or config needs a handful of levels (at most {MAX_DEPTH})"
    if "tab" in problem:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' needs quotes, or a key is mis-indented"
    if "could not find expected ':'" in problem:
        return "a key is missing its ':' or the indentation is off"
    return ""


def _too_big(size: int, name: str) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR,
        f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB"
        + (f" ({size / 1e6:.1f} MB)" if size > MAX_FILE_BYTES else "")
        + "; a recipe or config is smaller",
        Location(name, 1, 1),
        "is this the right file?",
    )


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, at most ``limit``; a located error otherwise.

    Opened non-blocking and checked for its type before any read: a FIFO would block for
    ever and ``/dev/zero`` never ends. At most ``limit + 1`` bytes are read, whatever the
    file claims its size is (``/proc`` files say 0)."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserError(
            Diagnostic(Severity.ERROR, f"no such file: {name}", hint="check the path")
        ) from None
    except IsADirectoryError:
        raise UserError(Diagnostic(Severity.ERROR, f"{name} is a directory, not a file")) from None
    except OSError as exc:
        hint = ""
        if exc.errno == errno.ENAMETOOLONG:
            hint = "a file name is at most 255 bytes"
        elif exc.errno == errno.ELOOP:
            hint = "a symbolic link points (through others) back to itself"
        raise UserError(
            Diagnostic(Severity.ERROR, f"cannot open {name}: {exc.strerror}", hint=hint)
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(Diagnostic(Severity.ERROR, f"{name} is a directory, not a file"))
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a FIFO (named pipe)"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "not a regular file"
            )
            raise UserError(
                Diagnostic(
                    Severity.ERROR,
                    f"{name} is {kind}, not a regular file",
                    hint="recipes and configs are read from ordinary files",
                )
            )
        if st.st_size > limit:
            raise UserError(_too_big(st.st_size, name))
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise UserError(_too_big(got, name))
        return b"".join(chunks)
    except OSError as exc:
        raise UserError(Diagnostic(Severity.ERROR, f"cannot read {name}: {exc.strerror}")) from None
    finally:
        os.close(fd)


def read_source(path: Path) -> str:
    """Read a YAML file as text, refusing binaries, special files and absurd sizes with a
    located error."""
    name = str(path)
    data = read_bounded(path)
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
