"""The only YAML reader of devicelab: inventory.yaml, profiles/networks.yaml, targets.yaml.

Every file is parsed with line and column marks kept for each node, then validated by its
pydantic model. An error names ``file:line:column``, the dotted field path, what was
expected and what was found, and leaves nothing half-loaded.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from devicelab.errors import ConfigError, UnknownId
from devicelab.models import Device, Inventory, NetworkCatalog, NetworkProfile, TargetBook
from devicelab.models.inventory import LOCATED

__all__ = [
    "device",
    "dotted_path",
    "find_file",
    "load_inventory",
    "load_networks",
    "load_targets",
    "load_yaml_model",
    "network_profile",
]


Path_ = tuple[str | int, ...]

#: Where the files are looked for, in order, when no path is given: $DEVICELAB_HOME,
#: the working directory, the checkout devicelab runs from, then the package's own copy.
_PACKAGE_DATA = Path(__file__).resolve().parent.parent
#: The lab files inside the package (links to the checkout's; real files in a wheel).
_SHIPPED = Path(__file__).resolve().parent / "data"


@dataclass
class _Marks:
    """Line/column of every node of a YAML document, keyed by its path."""

    file: str
    nodes: dict[Path_, yaml.Mark] = field(default_factory=dict)
    keys: dict[Path_, yaml.Mark] = field(default_factory=dict)

    def locate(self, path: Path_, *, at_key: bool = True) -> str:
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

    def __init__(self, marks: _Marks) -> None:
        self.marks = marks
        self.scalars = yaml.constructor.SafeConstructor()
        #: Nodes being built or merged: an alias to one of them is a loop, not data.
        self.building: set[int] = set()
        self.merging: set[int] = set()

    def where(self, node: yaml.Node) -> str:
        return f"{self.marks.file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def refuse(self, node: yaml.Node, path: Path_, problem: str, hint: str) -> ConfigError:
        where = self.where(node)
        return ConfigError(
            f"{where}: {problem}", hint=hint, location=where, field=dotted_path(path)
        )

    def build(self, node: yaml.Node, path: Path_) -> Any:
        """The data of ``node``. Raises ConfigError at the node that cannot be read."""
        self.marks.nodes[path] = node.start_mark
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
                result[key] = self.build(value_node, (*path, key))
            return result
        finally:
            self.building.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
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
                f"cannot read {_describe(node.value)}: {problem}",
                "quote the value to keep it as text, or fix it",
            ) from exc

    def key(self, node: yaml.Node, path: Path_) -> Any:
        if not isinstance(node, yaml.ScalarNode):  # `? [a, b]`: a key Python cannot hash
            raise self.refuse(node, path, "a key must be a plain name", "write it as a name")
        return self.scalar(node, path)

    def entries(
        self, node: yaml.MappingNode, path: Path_
    ) -> list[tuple[Any, yaml.Node, yaml.Node]]:
        """``(key, node marking the key, value node)`` of a mapping, merges resolved, in file
        order. Raises ConfigError for a key written twice, or a merge of something else than
        mappings or of itself."""
        pairs: list[tuple[Any, yaml.Node, yaml.Node]] = []
        own: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                pairs.append((_MERGED, key_node, value_node))
                continue
            key = self.key(key_node, path)
            if key in own:
                raise self.refuse(
                    key_node,
                    (*path, key),
                    f"duplicate key {key!r}",
                    "remove one of the two entries",
                )
            own.add(key)
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

    def merged(self, key: yaml.Node, node: yaml.Node, path: Path_) -> list[yaml.MappingNode]:
        """The mappings the ``<<`` whose value is ``node`` brings in. Raises ConfigError for
        anything else, or for a mapping that merges itself."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                found = "a list"
                if isinstance(source, yaml.ScalarNode):  # `<<:` left empty reads as ''
                    found = _describe(source.value or None)
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


def _describe(value: Any) -> str:
    if value is None:  # `serial:` with nothing after it reads as null
        return "an empty value"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read(path: Path) -> tuple[Any, _Marks]:
    marks = _Marks(file=str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file", hint="check the path, or run from the lab's folder"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read ({exc.strerror})", hint="check its permissions"
        ) from exc
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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML: {exc.problem}",
            hint="fix the indentation or quoting there",
            location=where,
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
    if node is None:
        return {}, marks
    return _Builder(marks).build(node, ()), marks


def load_yaml_model[M: BaseModel](path: str | os.PathLike[str], model: type[M]) -> M:
    """Read ``path`` and validate it as ``model``.

    Returns the model. Raises ConfigError naming file:line:column and the field path of the
    first problem (and how many more there are).
    """
    path = Path(path)
    data, marks = _read(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = _first(errors)
        # A rule of a model over several fields names the field it refuses (ctx "at", from
        # the model's own place) and may name the entry it clashes with (ctx "other").
        ctx = first.get("ctx") or {}
        at, other = ctx.get("at"), ctx.get("other")
        loc = tuple(first["loc"]) + (tuple(at) if isinstance(at, tuple) else ())
        at_key = isinstance(at, tuple) or first["type"] in ("extra_forbidden", "missing")
        where = marks.locate(loc, at_key=at_key)
        field_path = dotted_path(loc)
        message = _explain(first, loc, model)
        if isinstance(other, tuple):
            message += f" (other entry: {marks.locate(tuple(first['loc']) + other)})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = ctx.get("hint")
        raise ConfigError(
            f"{where}: {field_path}: {message}{more}",
            hint=hint if isinstance(hint, str) else f"fix {field_path} in {path}",
            location=where,
            field=field_path,
        ) from exc


def _first(errors: list[Any]) -> Any:
    """The error to report: pydantic lists a missing field before an unknown one, but an
    unknown key beside a missing field is most likely its typo (``modle:``), and saying so
    names the line to fix and the right spelling."""
    missing = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "missing"}
    typo = (e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) in missing)
    return next(typo, errors[0])


def _model_at(model: type[BaseModel], path: Path_) -> type[BaseModel] | None:
    """The model class that holds the last element of ``path``, walking field types."""
    current: Any = model
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if isinstance(part, int) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
            continue
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) is dict and len(args) == 2:
            current = args[1]
        elif args:
            current = args[-1]
        else:
            return None
    while not (isinstance(current, type) and issubclass(current, BaseModel)):
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if not args:
            return None
        current = args[-1]
    return current


def _explain(error: Any, loc: Path_, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        known = list(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {loc[-1]!r}{guess}"
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be ") :]
    if "input" in error and kind not in ("value_error", "assertion_error", LOCATED):
        return f"{message}, found {_describe(error['input'])}"
    return message


def find_file(name: str, given: str | os.PathLike[str] | None = None) -> Path:
    """The path of a lab file: ``given`` if set, else $DEVICELAB_HOME/name, ./name, the
    checkout devicelab runs from, or the copy shipped in the package (``devicelab/data``,
    which a wheel carries). Raises ConfigError when ``given`` does not exist."""
    if given is not None:
        path = Path(given)
        if not path.exists():
            raise ConfigError(f"{path}: no such file", hint=f"check the path of {name}")
        return path
    candidates = []
    if home := os.environ.get("DEVICELAB_HOME"):
        if not Path(home).is_dir():  # a typo would fall back to other files, silently
            raise ConfigError(
                f"DEVICELAB_HOME={home}: no such folder",
                hint="point it at the folder holding inventory.yaml and profiles/, or unset it",
            )
        candidates.append(Path(home) / name)
    candidates.append(Path.cwd() / name)
    candidates.append(_PACKAGE_DATA / name)
    candidates.append(_SHIPPED / name)
    for path in candidates:
        if path.exists():
            return path
    raise ConfigError(f"{name}: not found", hint="set DEVICELAB_HOME to the lab's folder")


def load_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """The lab inventory. Raises ConfigError."""
    return load_yaml_model(find_file("inventory.yaml", path), Inventory)


def load_networks(path: str | os.PathLike[str] | None = None) -> NetworkCatalog:
    """The network profiles. Raises ConfigError."""
    return load_yaml_model(find_file("profiles/networks.yaml", path), NetworkCatalog)


def load_targets(path: str | os.PathLike[str] | None = None) -> TargetBook:
    """The story's targets. Raises ConfigError."""
    return load_yaml_model(find_file("profiles/targets.yaml", path), TargetBook)


def network_profile(name: str, catalog: NetworkCatalog | None = None) -> NetworkProfile:
    """The profile called ``name``. Raises UnknownId with the closest known id."""
    catalog = catalog or load_networks()
    try:
        return catalog.profiles[name]
    except KeyError:
        raise UnknownId("network", name, catalog.ids()) from None


def device(name: str, inventory: Inventory | None = None) -> Device:
    """The device called ``name``. Raises UnknownId with the closest known id."""
    inventory = inventory or load_inventory()
    try:
        return inventory.devices[name]
    except KeyError:
        raise UnknownId("device", name, inventory.ids()) from None
