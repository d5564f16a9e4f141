"""Located diagnostics: every user error names ``file:line:col`` and, where we can, a hint.

Loaders and checkers collect :class:`Diagnostic` objects in a :class:`Diagnostics` list and
keep going, so one pass reports every problem; they raise :class:`UserError` at the end.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides that
# make a terminal show text in another order than it is stored.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    r"""``text`` with control characters and escape sequences shown, not executed:
    ESC becomes the four characters ``\x1b``."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_visible, text)


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# A key or name someone typed: short, one word. Anything else in a file we refuse may be a
# line of /etc/shadow or a token (read by mistake through --config), so it is never repeated.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
NOT_SHOWN = "(not shown)"


def plain_word(text: object) -> bool:
    """Whether ``text`` reads as an identifier a user typed (short, ``[A-Za-z0-9_.-]``)."""
    return bool(_PLAIN_WORD.fullmatch(str(text)))


def shown(text: object) -> str:
    """``text`` when it is a plain word, else :data:`NOT_SHOWN`: for names taken from a file
    that may not be ours (keys, dotted paths of keys)."""
    return str(text) if plain_word(text) else NOT_SHOWN


def unknown_key(key: object) -> str:
    """``unknown key 'name'``, or ``an unknown key (not shown)`` when the key is not a plain
    word (a line of a password file parses as one long key)."""
    return f"unknown key '{key}'" if plain_word(key) else f"an unknown key {NOT_SHOWN}"


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def hide_quoted(text: str) -> str:
    """``text`` with each quoted part that is not a plain word replaced by
    :data:`NOT_SHOWN`: parser messages quote pieces of the file (aliases, tags, keys). A
    character or an escape of one (``'\\t'``) says nothing of a file and is kept."""

    def keep(m: re.Match[str]) -> str:
        inner = m.group()[1:-1]
        return m.group() if len(inner) <= 2 or plain_word(inner) else NOT_SHOWN

    return _QUOTED.sub(keep, text)


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    """1-based."""
    col: int
    """1-based."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    message: str
    location: Location | None = None
    hint: str = ""

    def format(self) -> str:
        where = f"{self.location}: " if self.location else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        # One line each, always: editors and CI annotators parse file:line:col: kind: text.
        text = f"{where}{self.severity}: {self.message}{hint}"
        return neutralise(" ".join(text.split("\n")))

    def __str__(self) -> str:
        return self.format()


class Diagnostics:
    """An ordered collection of diagnostics that drops exact duplicates."""

    def __init__(self) -> None:
        self._items: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()

    def add(self, d: Diagnostic) -> None:
        if d not in self._seen:
            self._seen.add(d)
            self._items.append(d)

    def error(self, message: str, location: Location | None = None, hint: str = "") -> None:
        self.add(Diagnostic(Severity.ERROR, message, location, hint))

    def warning(self, message: str, location: Location | None = None, hint: str = "") -> None:
        self.add(Diagnostic(Severity.WARNING, message, location, hint))

    def extend(self, items: Iterable[Diagnostic]) -> None:
        for d in items:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self._items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self._items if d.severity is Severity.WARNING]

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise UserError(list(self._items))


class UserError(Exception):
    """Bad input from the user: printed as located one-liners, never as a traceback."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(Severity.ERROR, diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice, or listing the choices when none is close."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in options}
        if word.casefold() in folded:
            close = [folded[word.casefold()]]
    if close:
        return f"did you mean '{close[0]}'?"
    if 0 < len(options) <= 12:
        return "expected one of: " + ", ".join(options)
    return ""
