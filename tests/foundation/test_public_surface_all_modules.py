"""Every module of devicelab and backend_checks declares its public surface in ``__all__``.

STYLE.md habit 10. For each module: ``__all__`` is defined, every name in it exists, and
every public function or class the module defines (not imports) is listed in it, unless
the module is a private one (a dotted part of its name starts with ``_``).

The modules are imported in one child process, so that what they load (mitmproxy,
playwright, appium) stays out of this one. Modules that import Locust or gevent at their
top (they run only inside the load workers: gevent's patching must never reach the test
process) and ``__main__`` modules (importing one runs the CLI) are read with ast only.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("devicelab", "backend_checks")
#: Imported at the top, these patch or need gevent: such a module is read, never imported.
GEVENT_WORLD = frozenset({"locust", "gevent", "geventhttpclient"})
#: Extras a module may need at import (pyproject's optional-dependencies): without one, the
#: import half of the check is skipped with the reason.
OPTIONAL = frozenset({"pymobiledevice3"})
#: Public defs not yet in ``__all__`` of modules another change is editing now; each entry
#: goes when its name is added there (the test then passes without the xfail).
PENDING: frozenset[tuple[str, str]] = frozenset()

CHILD = """
import importlib, json, pkgutil, sys, traceback
names, heavy = json.loads(sys.stdin.read())
out = {}
for name in names:
    before = set(sys.modules)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        out[name] = {"error": traceback.format_exc(), "missing_module": exc.name}
        continue
    except Exception:
        out[name] = {"error": traceback.format_exc()}
        continue
    listed = vars(module).get("__all__")
    out[name] = {
        "all": None if listed is None else list(listed),
        "absent": [n for n in listed or () if not hasattr(module, n)],
        "heavy": sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy),
    }
walked = []
for top in ("devicelab", "backend_checks"):
    walked.append(top)
    pkg = importlib.import_module(top)
    walked += [i.name for i in pkgutil.walk_packages(pkg.__path__, top + ".")]
print(json.dumps({"modules": out, "walked": walked}))
"""


def _walk(package: str, folder: Path) -> Iterator[tuple[str, Path]]:
    """(dotted name, source file) of ``package`` and every module under it, none imported."""
    yield package, folder / "__init__.py"
    for info in pkgutil.iter_modules([str(folder)]):
        name = f"{package}.{info.name}"
        if info.ispkg:
            yield from _walk(name, folder / info.name)
        else:
            yield name, folder / f"{info.name}.py"


SOURCES = dict(pair for top in PACKAGES for pair in _walk(top, ROOT / top))


def _tree(name: str) -> ast.Module:
    return ast.parse(SOURCES[name].read_text(encoding="utf-8"), filename=str(SOURCES[name]))


def _top_level_imports(body: list[ast.stmt]) -> set[str]:
    """First parts of the packages that statements ``body`` import when they run: not in
    a def, nor under ``if TYPE_CHECKING``, but inside a top-level ``if``/``try``/``with``."""
    found: set[str] = set()
    for node in body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            found |= _top_level_imports(node.body) | _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try | ast.With):
            for part in ("body", "orelse", "finalbody"):
                found |= _top_level_imports(getattr(node, part, []))
            for handler in getattr(node, "handlers", []):
                found |= _top_level_imports(handler.body)
    return found


def _read_only(name: str) -> str | None:
    """Why ``name`` must not be imported here, or None when it may be."""
    if name.rsplit(".", 1)[-1] == "__main__":
        return "importing a __main__ module runs the CLI"
    gevent = sorted(_top_level_imports(_tree(name).body) & GEVENT_WORLD)
    if gevent:
        return f"imports {', '.join(gevent)} at its top: only a load worker may"
    return None


def _listed(tree: ast.Module) -> list[str] | None:
    """The literal ``__all__`` of the module's source, or None when it has none."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return [str(n) for n in ast.literal_eval(node.value)]
    return None


def _bound(tree: ast.Module) -> set[str]:
    """Names the module's top-level statements bind (defs, assignments, imports)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        else:
            names |= {
                sub.id
                for sub in ast.walk(node)
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)
            }
    return names


def _public_defs(tree: ast.Module) -> list[str]:
    """The public functions and classes the module defines at its top."""
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
    ]


@pytest.fixture(scope="module")
def imported() -> dict[str, Any]:
    """What one child process found importing every module that may be imported."""
    names = [name for name in SOURCES if _read_only(name) is None]
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps([names, sorted(GEVENT_WORLD)]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_walk_finds_what_pkgutil_walk_packages_finds(imported: dict[str, Any]) -> None:
    assert sorted(imported["walked"]) == sorted(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_module_declares_its_public_surface(name: str, imported: dict[str, Any]) -> None:
    tree = _tree(name)
    why_not = _read_only(name)
    if why_not is None:
        found = imported["modules"][name]
        if found.get("missing_module") in OPTIONAL:
            pytest.skip(f"{name} needs the optional {found['missing_module']} to import")
        assert "error" not in found, f"importing {name} failed:\n{found['error']}"
        assert not found["heavy"], f"importing {name} loaded {found['heavy']}"
        listed = found["all"]
        assert listed is not None, f"{name} defines no __all__"
        absent = found["absent"]
    else:
        # Read, not imported: the module's top-level bindings stand for its attributes.
        listed = _listed(tree)
        assert listed is not None, f"{name} ({why_not}) defines no __all__"
        absent = [n for n in listed if n not in _bound(tree)]
    assert not absent, f"{name}.__all__ names what the module lacks: {absent}"
    if any(part.startswith("_") for part in name.split(".")):
        return  # a private module: what it defines is for its package only
    unlisted = [n for n in _public_defs(tree) if n not in listed]
    pending = sorted(n for n in unlisted if (name, n) in PENDING)
    assert not [n for n in unlisted if n not in pending], (
        f"{name} defines public {sorted(unlisted)} missing from its __all__: list them, or "
        "rename with a leading _ what only the module itself uses"
    )
    if pending:
        pytest.xfail(f"pending change adds {pending} to {name}.__all__ (module being edited)")
