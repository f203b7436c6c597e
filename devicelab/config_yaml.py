"""Reading a YAML lab file into plain data with the line and column of every node.

devicelab.config validates that data with the pydantic models; this module only parses.
A syntax error names its line (and the line of the construct it broke, for an unclosed
quote or bracket); a key written twice names both lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devicelab.errors import ConfigError

__all__ = ["Marks", "YamlPath", "describe", "dotted_path", "read_yaml"]

#: Where a node sits in the document: the keys and list indexes leading to it.
YamlPath = tuple[str | int, ...]


@dataclass
class Marks:
    """Line/column of every node of a YAML document, keyed by its path, and the text of
    each key YAML 1.1 read as no string (``no:`` is False, ``5:`` is 5)."""

    file: str
    nodes: dict[YamlPath, yaml.Mark] = field(default_factory=dict)
    keys: dict[YamlPath, yaml.Mark] = field(default_factory=dict)
    key_text: dict[YamlPath, str] = field(default_factory=dict)

    def locate(self, path: YamlPath, *, at_key: bool = True) -> str:
        """``file:line:column`` of the deepest node of ``path`` that exists: its key when
        ``at_key`` (an unknown or a missing field), else its value (a wrong value)."""
        probe = tuple(path)
        while probe:
            first, second = (self.keys, self.nodes) if at_key else (self.nodes, self.keys)
            mark = first.get(probe) or second.get(probe)
            if mark is not None:
                return f"{self.file}:{mark.line + 1}:{mark.column + 1}"
            probe = probe[:-1]
        mark = self.nodes.get(())
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        return f"{self.file}{line}"


#: The largest lab file read (the inventory of a big farm is some hundred KB).
_MAX_BYTES = 16 << 20
#: The most values a lab file may make: a thousand devices are some 20,000; a few hundred
#: bytes of aliases repeating aliases (a "billion laughs") make billions.
_MAX_VALUES = 200_000

_MERGE = "tag:yaml.org,2002:merge"
#: Stands for a ``<<`` key among a mapping's keys (None is a key: ``~: x``).
_MERGED = object()


class _Builder:
    """Turns a composed YAML node into plain Python data, recording marks by path.

    Scalars are built by PyYAML's safe constructor (an empty value is None). A merge key
    (``<<: *anchor``, or a list of anchors) brings in the anchored mappings' entries that
    the mapping does not set itself, the first anchor of a list winning: they count as the
    mapping's own, their keys marked at the ``<<`` (the line of this entry that brought them
    in), their values where the anchor writes them.
    """

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.scalars = yaml.constructor.SafeConstructor()
        #: Nodes being built or merged: an alias to one of them is a loop, not data.
        self.building: set[int] = set()
        self.merging: set[int] = set()
        #: Values built so far, aliases counted each time they are used (see _MAX_VALUES).
        self.built = 0

    def where(self, node: yaml.Node) -> str:
        return f"{self.marks.file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def refuse(self, node: yaml.Node, path: YamlPath, problem: str, hint: str) -> ConfigError:
        where = self.where(node)
        return ConfigError(
            f"{where}: {problem}", hint=hint, location=where, field=dotted_path(path)
        )

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        """The data of ``node``. Raises ConfigError at the node that cannot be read."""
        self.marks.nodes[path] = node.start_mark
        self.built += 1
        if self.built > _MAX_VALUES:
            raise self.refuse(
                node,
                path,
                f"the document makes more than {_MAX_VALUES:,} values (aliases of aliases?)",
                "write the entries out, or anchor fewer copies of big parts",
            )
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.building:
            raise self.refuse(
                node, path, "an alias (*name) inside what it names", "point it at another entry"
            )
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)  # the composer makes no other kind
            result: dict[Any, Any] = {}
            for key, key_node, value_node in self.entries(node, path):
                self.marks.keys[(*path, key)] = key_node.start_mark
                if not isinstance(key, str) and isinstance(key_node, yaml.ScalarNode):
                    self.marks.key_text[(*path, key)] = key_node.value
                result[key] = self.build(value_node, (*path, key))
            return result
        finally:
            self.building.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: YamlPath) -> Any:
        if node.tag == _MERGE:  # a plain `<<` as a value is only text
            return node.value
        try:
            return self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            # `2019-02-30` (a date that is none), `!!int x`, an unknown `!tag`.
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.refuse(
                node,
                path,
                f"cannot read {describe(node.value)}: {problem}",
                "quote the value to keep it as text, or fix it",
            ) from exc

    def key(self, node: yaml.Node, path: YamlPath) -> Any:
        if not isinstance(node, yaml.ScalarNode):  # `? [a, b]`: a key Python cannot hash
            raise self.refuse(node, path, "a key must be a plain name", "write it as a name")
        return self.scalar(node, path)

    def entries(
        self, node: yaml.MappingNode, path: YamlPath
    ) -> list[tuple[Any, yaml.Node, yaml.Node]]:
        """``(key, node marking the key, value node)`` of a mapping, merges resolved, in file
        order. Raises ConfigError for a key written twice, or a merge of something else than
        mappings or of itself."""
        pairs: list[tuple[Any, yaml.Node, yaml.Node]] = []
        own: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                pairs.append((_MERGED, key_node, value_node))
                continue
            key = self.key(key_node, path)
            if key in own:
                first = own[key].start_mark
                raise self.refuse(
                    key_node,
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first.line + 1})",
                    "remove one of the two entries",
                )
            own[key] = key_node
            pairs.append((key, key_node, value_node))
        self.merging.add(id(node))
        try:
            result: list[tuple[Any, yaml.Node, yaml.Node]] = []
            taken = set(own)
            for key, key_node, value_node in pairs:
                if key is not _MERGED:
                    result.append((key, key_node, value_node))
                    continue
                for source in self.merged(key_node, value_node, (*path, "<<")):
                    for merged_key, _, merged_value in self.entries(source, path):
                        if merged_key not in taken:
                            result.append((merged_key, key_node, merged_value))
                            taken.add(merged_key)
            return result
        finally:
            self.merging.discard(id(node))

    def merged(self, key: yaml.Node, node: yaml.Node, path: YamlPath) -> list[yaml.MappingNode]:
        """The mappings the ``<<`` whose value is ``node`` brings in. Raises ConfigError for
        anything else, or for a mapping that merges itself."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                found = "a list"
                if isinstance(source, yaml.ScalarNode):  # `<<:` left empty reads as ''
                    found = describe(source.value or None)
                raise self.refuse(
                    source,
                    path,
                    f"`<<` merges a mapping (`<<: *name`) or a list of them (`<<: [*a, *b]`), "
                    f"found {found}",
                    "point `<<` at an anchored mapping (`name: &name {...}`)",
                )
            if id(source) in self.merging:
                raise self.refuse(
                    key, path, "`<<` merges the mapping it is in", "point it at another entry"
                )
        return list(sources)


def dotted_path(path: Sequence[object]) -> str:
    """A field path as a reader writes it: ``("devices", 2, "serial")`` ->
    ``devices[2].serial`` (a pydantic error's ``loc``, or a YAML node's path); returns
    ``(document)`` for the empty path. Never raises."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def describe(value: Any) -> str:
    """``value`` as an error message shows it: its repr cut to 60 characters, or "an empty
    value" for None. Never raises."""
    if value is None:  # `serial:` with nothing after it reads as null
        return "an empty value"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_yaml(path: Path) -> tuple[Any, Marks]:
    """The plain data of the YAML file ``path`` ({} when empty) and the marks of its nodes.
    Raises ConfigError naming file:line:column: a file missing or unreadable, not UTF-8, not
    YAML (with the line of the quote or bracket left open, when there is one), a key
    written twice, a value YAML cannot build."""
    marks = Marks(file=str(path))
    try:
        with path.open("rb") as handle:  # bounded: /dev/zero, or a big file given by mistake
            data = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file", hint="check the path, or run from the lab's folder"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read ({exc.strerror})", hint="check its permissions"
        ) from exc
    if len(data) > _MAX_BYTES:
        raise ConfigError(
            f"{path}: larger than {_MAX_BYTES >> 20} MiB: no lab file is",
            hint="check the path: it should name an inventory, profiles or targets file",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # An editor that saved latin-1 or UTF-16: name the first byte that is not UTF-8.
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        where = f"{path}:{line}:{column}"
        raise ConfigError(
            f"{where}: not UTF-8 (byte 0x{data[exc.start]:02x})",
            hint="save the file as UTF-8",
            location=where,
        ) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        return ({}, marks) if node is None else (_Builder(marks).build(node, ()), marks)
    except RecursionError:  # PyYAML composes, and we build, by recursion
        raise ConfigError(
            f"{path}: nested too deeply to read", hint="no lab file nests this deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark, opened = exc.problem_mark, exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        hint = "fix the indentation or quoting there"
        also = ""
        # An unclosed quote is found lines later (at the end of the file): the line that
        # opened it is the one to fix.
        if opened is not None and exc.context and (mark is None or opened.line != mark.line):
            also = f" ({exc.context} at {path}:{opened.line + 1}:{opened.column + 1})"
            hint = f"close the quote or bracket opened on line {opened.line + 1}, or fix it there"
        raise ConfigError(
            f"{where}: not valid YAML: {exc.problem}{also}", hint=hint, location=where
        ) from exc
    except yaml.reader.ReaderError as exc:  # a control character: marked by offset only
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        where = f"{path}:{line}:{column}"
        raise ConfigError(
            f"{where}: not valid YAML: character #x{exc.character:04x} is not allowed",
            hint="remove it, or write it as an escape in a double-quoted string",
            location=where,
        ) from exc
