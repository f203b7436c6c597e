"""The only YAML reader of devicelab: inventory.yaml, profiles/networks.yaml, targets.yaml.

Every file is parsed with line and column marks kept for each node, then validated by its
pydantic model. An error names ``file:line:column``, the dotted field path, what was
expected and what was found, and leaves nothing half-loaded.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from devicelab.config_yaml import Marks, YamlPath, describe, dotted_path, read_yaml
from devicelab.errors import ConfigError, UnknownId
from devicelab.models import Device, Inventory, NetworkCatalog, NetworkProfile, TargetBook
from devicelab.models.inventory import LOCATED
from devicelab.models.messages import plain

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

#: Where the files are looked for, in order, when no path is given: $DEVICELAB_HOME,
#: the working directory, the checkout devicelab runs from, then the package's own copy.
_PACKAGE_DATA = Path(__file__).resolve().parent.parent
#: The lab files inside the package (links to the checkout's; real files in a wheel).
_SHIPPED = Path(__file__).resolve().parent / "data"


def load_yaml_model[M: BaseModel](
    path: str | os.PathLike[str], model: type[M], *, context: dict[str, Any] | None = None
) -> M:
    """Read ``path`` and validate it as ``model`` (with pydantic's validation ``context``,
    for the rules that need what only the code knows: the check ids, the units).

    Returns the model. Raises ConfigError naming file:line:column and the field path of the
    first problem (and how many more there are).
    """
    path = Path(path)
    data, marks = read_yaml(path)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = _first(errors)
        if first["loc"] and first["loc"][-1] == "[key]":
            _refuse_key(first, marks, path)
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


def _refuse_key(error: Any, marks: Marks, path: Path) -> None:
    """Raise the ConfigError of a mapping key the model wants as a name: YAML 1.1 reads an
    unquoted ``no:`` as False and ``5:`` as 5, which pydantic reported at
    ``profiles[0].[key]`` ("expected a valid string, found False")."""
    holder, key = tuple(error["loc"][:-2]), error["loc"][-2]
    # pydantic's loc holds the key as an int (False is 0): match it by equality.
    found = next(((p, t) for p, t in marks.key_text.items() if p == (*holder, key)), None)
    text = found[1] if found else str(error.get("input"))
    where = marks.locate(found[0] if found else holder)
    field_path = f"{dotted_path(holder)}.{text}" if holder else text
    raise ConfigError(
        f"{where}: {field_path}: the key {text!r} reads as {describe(error.get('input'))}"
        " in YAML, not as a name",
        hint=f"quote the key ('{text}')",
        location=where,
        field=field_path,
    )


def _first(errors: list[Any]) -> Any:
    """The error to report: pydantic lists a missing field before an unknown one, but an
    unknown key beside a missing field is most likely its typo (``modle:``), and saying so
    names the line to fix and the right spelling."""
    missing = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "missing"}
    typo = (e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) in missing)
    return next(typo, errors[0])


def _model_at(model: type[BaseModel], path: YamlPath) -> type[BaseModel] | None:
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


def _explain(error: Any, loc: YamlPath, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        known = list(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {loc[-1]!r}{guess}"
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    message = plain(str(error["msg"]))
    if "input" in error and kind not in ("value_error", "assertion_error", LOCATED):
        return f"{message}, found {describe(error['input'])}"
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
    """The story's targets. Raises ConfigError, at the row's line, for a row of an unknown
    check or unit, a row that applies with no value, or a row given twice."""
    from devicelab.targets import UNITS, known_checks

    # Rows of no check, or in no unit the lab compares, are refused here, at their line:
    # they were passed over (the check ran unjudged) or failed after measuring.
    context = {"checks": known_checks(), "units": UNITS}
    return load_yaml_model(find_file("profiles/targets.yaml", path), TargetBook, context=context)


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
