"""The error tree is whole in devicelab/errors.py, and every error devicelab makes has a
hint (STYLE.md, habit 5): read from the source, so a new ``raise`` without one fails here."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("devicelab", "backend_checks")
ERRORS_FILE = "devicelab/errors.py"

#: Constructions excused from a hint: (file, start of the message), each named exactly so
#: that a new one elsewhere still fails. None today.
PENDING: set[tuple[str, str]] = set()

#: Where each moved class was defined first; importing it from there must keep working.
OLD_HOMES = {
    "DeviceLeftChanged": "devicelab.teardown",
    "ProbeTimedOut": "devicelab.harness",
    "ApiUnreachable": "backend_checks.supabase_auth",
    "SignInRefused": "backend_checks.supabase_auth",
    "PortInUse": "backend_checks.reference.server",
}


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _tree_classes() -> set[str]:
    return {
        name
        for name in errors.__all__
        if inspect.isclass(getattr(errors, name))
        and issubclass(getattr(errors, name), errors.DeviceLabError)
    }


def _subclasses_outside() -> list[str]:
    """Classes deriving from an error of the tree anywhere but errors.py, as file:line."""
    known = _tree_classes()
    found = []
    for file, module in _sources():
        if file == ERRORS_FILE:
            continue
        for node in ast.walk(module):
            if isinstance(node, ast.ClassDef) and any(_name(b) in known for b in node.bases):
                found.append(f"{file}:{node.lineno}: class {node.name}")
    return found


def test_every_error_class_is_defined_in_errors_py() -> None:
    assert _subclasses_outside() == []


def test_the_docstring_draws_every_error_class() -> None:
    drawn = errors.__doc__ or ""
    assert [name for name in sorted(_tree_classes()) if name not in drawn] == []


@pytest.mark.parametrize("name", sorted(OLD_HOMES))
def test_moved_errors_still_import_from_where_they_were(name: str) -> None:
    module = importlib.import_module(OLD_HOMES[name])
    assert getattr(module, name) is getattr(errors, name)
    assert name in module.__all__


def _sets_own_hint(cls: type) -> bool:
    """Whether ``cls`` builds its hint itself (its constructor takes none)."""
    return "hint" not in inspect.signature(cls.__init__).parameters


def _message_start(call: ast.Call) -> str:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.JoinedStr) and first.values:
        head = first.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return ""


def _needing_a_hint() -> set[str]:
    """The error classes whose constructor takes the hint (the others set their own)."""
    return {n for n in _tree_classes() if not _sets_own_hint(getattr(errors, n))}


def _hintless(module: ast.Module, needing: set[str]) -> list[ast.Call]:
    """Every construction in ``module`` of a class of ``needing`` (a ``raise X(...)``, or
    one made to be raised or returned) with no hint, or an empty one. A re-raise of an
    error object (``raise exc``) constructs nothing."""
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and _name(node.func) in needing:
            hint = next((k.value for k in node.keywords if k.arg == "hint"), None)
            if hint is None or (isinstance(hint, ast.Constant) and not hint.value):
                found.append(node)
    return found


def test_every_error_made_has_a_hint() -> None:
    needing = _needing_a_hint()
    missing = [
        f"{file}:{call.lineno}: {_name(call.func)}"
        for file, module in _sources()
        for call in _hintless(module, needing)
        if not any(file == f and _message_start(call).startswith(s) for f, s in PENDING)
    ]
    assert missing == []


def test_the_scan_flags_what_it_must_and_only_that() -> None:
    source = (
        "raise ProbeFailed('no hint')\n"
        "raise ProbeFailed('empty', hint='')\n"
        "return errors.BackendUnavailable('dotted, returned')\n"
        "raise ProbeFailed('fine', hint='run again')\n"
        "raise ProbeFailed('fine', hint=HINT)\n"
        "raise ProbeTimedOut('sets its own', 3.0)\n"
        "raise UnknownId('device', 'x', ['y'])\n"
        "raise exc\n"
    )
    module = ast.parse(source.replace("return", "x ="))
    assert [call.lineno for call in _hintless(module, _needing_a_hint())] == [1, 2, 3]
