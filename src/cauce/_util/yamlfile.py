"""YAML spec files, read the one way: every failure is a :class:`SpecError` naming the file.

Specs are small and written by people, so the loader refuses what only a mistake or an attack
produces, each with a one-line message: files over :data:`MAX_SPEC_BYTES`, bytes that are not
UTF-8, nesting deeper than :data:`MAX_DEPTH`, aliases that expand into more than
:data:`MAX_ALIAS_NODES` values (a few hundred bytes of nested anchors can otherwise stand for
billions of values, which any later formatting or walk would expand), recursive aliases, and a
key given twice in one mapping (YAML keeps the last silently). Values YAML itself cannot build
(``2001-02-30``, an integer of 5000 digits) are refused too. Uses libyaml when present.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from cauce._util.text import one_line
from cauce.errors import SpecError, SpecErrors

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_SPEC_BYTES",
    "load_yaml_file",
    "load_yaml_text",
    "locate",
    "short_repr",
]

#: Largest spec file read, in bytes.
MAX_SPEC_BYTES = 1 << 20
#: Deepest nesting of mappings and lists.
MAX_DEPTH = 64
#: Most values that aliases may add to a document once expanded (a scalar counts once per
#: :data:`_CHARS_PER_NODE` characters).
MAX_ALIAS_NODES = 100_000
_CHARS_PER_NODE = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (for messages: a value may be huge)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"<a whole number of {value.bit_length()} bits>"  # repr may refuse: too long
    if isinstance(value, str | bytes) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # no need to build the repr of a megabyte
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Refused(yaml.YAMLError):
    """A document YAML accepts but a spec may not be."""


class _Bounded(Composer, SafeConstructor):
    """Composes with a depth and an alias-expansion budget; refuses duplicate keys.

    Placed first in the loader's bases, its Python composer (driven by the C or Python parser's
    events) replaces libyaml's, which has no limits.
    """

    if TYPE_CHECKING:  # from the parser the loader class mixes in

        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> Any: ...

    def _init_bounds(self) -> None:
        Composer.__init__(self)
        self._depth = 0
        self._expanded = 0  # values in the document as aliases expand it
        self._from_aliases = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _Refused(
                    f"alias *{event.anchor} at line {event.start_mark.line + 1} refers to a "
                    "value that contains it: recursive values are not allowed in a spec"
                )
            self._expanded += size
            self._from_aliases += size
            if self._from_aliases > MAX_ALIAS_NODES:
                raise _Refused(
                    f"aliases expand into more than {MAX_ALIAS_NODES} values (at alias "
                    f"*{event.anchor}, line {event.start_mark.line + 1}): write the values out "
                    "or use fewer aliases"
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise _Refused(f"nests deeper than {MAX_DEPTH} levels at line {mark.line + 1}")
        start = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None  # only an alias composes to None, when undefined (raised)
        weight = len(node.value) // _CHARS_PER_NODE if isinstance(node, ScalarNode) else 0
        self._expanded += 1 + weight
        self._sizes[id(node)] = self._expanded - start
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ConstructorError(
                None, None, f"cannot read this value: {one_line(exc, 200)}", node.start_mark
            ) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # merged keys may be overridden: that is what merging is for
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it below
                if first is not None:
                    raise _Refused(
                        f"key {short_repr(key)} is given twice, at lines {first} and "
                        f"{_line(key_node)}: keep one"
                    )
                seen[key] = _line(key_node)
        return super().construct_mapping(node, deep)


class _Resolver(Resolver):
    """YAML 1.1's implicit types, and numbers in exponent form as YAML 1.2 reads them: 1.1
    wants a dot and a signed exponent (``1.0e-4``), so ``lr: 1e-4`` or ``timeout: 1e3`` would
    be strings, the usual way of writing a learning rate refused as "not a number"."""


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _loader_class(libyaml: bool) -> type[Any]:
    if libyaml:
        from yaml.cyaml import CParser  # type: ignore[attr-defined]

        class _CLoader(_Bounded, CParser, _Resolver):
            def __init__(self, stream: str) -> None:
                CParser.__init__(self, stream)
                SafeConstructor.__init__(self)
                _Resolver.__init__(self)
                self._init_bounds()

        return _CLoader

    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _PyLoader(_Bounded, Reader, Scanner, Parser, _Resolver):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            SafeConstructor.__init__(self)
            _Resolver.__init__(self)
            self._init_bounds()

    return _PyLoader


_LOADER = _loader_class(bool(getattr(yaml, "__with_libyaml__", False)))


def load_yaml_file(path: Path, *, what: str, lines: dict[str, int] | None = None) -> Any:
    """Read and parse ``path``; ``what`` names it in messages (``"job file"``). ``lines``, when
    given, gets the line of every key path (``roles.worker.instances``, ``tune.start[0]``)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("", f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpecError("", f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            "",
            f"{what} {str(path)!r} is larger than {MAX_SPEC_BYTES // 1024} KiB: a spec is a "
            "short text file; check the path",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            "",
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded; save the file as UTF-8",
        ) from None
    return load_yaml_text(text, source=str(path), lines=lines)


def load_yaml_text(text: str, *, source: str, lines: dict[str, int] | None = None) -> Any:
    """Parse ``text``; ``source`` (the file) starts every message; ``lines`` as above."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(
            "", f"is larger than {MAX_SPEC_BYTES // 1024} KiB: a spec is short", source=source
        )
    return _parse(text, source, _LOADER, lines)


def _parse(
    text: str, source: str, loader_class: type[Any], lines: dict[str, int] | None = None
) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if lines is not None:
            _key_lines(node, "", lines)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError("", _describe(exc), source=source) from None
    finally:
        loader.dispose()


def _key_lines(node: Node, path: str, out: dict[str, int]) -> None:
    """The line of each key path under ``node`` (the first, where aliases repeat one)."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                where = f"{path}.{key_node.value}" if path else str(key_node.value)
                if where not in out:
                    out[where] = _line(key_node)
                    _key_lines(value_node, where, out)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            if where not in out:
                out[where] = _line(item)
                _key_lines(item, where, out)


def locate(error: SpecError, lines: dict[str, int]) -> SpecError:
    """``error`` (each of :class:`SpecErrors`, in file order) with the line of its key path, or
    of the nearest key above it that the file has."""
    if isinstance(error, SpecErrors):  # in file order; those of no line last
        each = [locate(one, lines) for one in error.errors]
        return SpecErrors(sorted(each, key=lambda one: (one.line == 0, one.line)))
    if error.line or not error.path:
        return error
    path = error.path
    while path and path not in lines:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    if not path:
        return error
    located = SpecError(
        error.path, error.message, value=error.value, source=error.source, line=lines[path]
    )
    return located.with_traceback(error.__traceback__)


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, _Refused):
        return f"is refused: {exc}"
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = f" #x{ord(char):04x}" if isinstance(char, str) and len(char) == 1 else ""
        return f"is not valid YAML at offset {exc.position}: character{code}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem = f"{context} at line {context_mark.line + 1}: {problem}"
    return f"is not valid YAML{where}: {one_line(problem, 200)}"
