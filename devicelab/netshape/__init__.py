"""Network shaping: a mitmproxy addon that emulates 3G/4G/5G links, and checks itself.

Importing this package is cheap: mitmproxy is imported by the modules that need it
(``addon``, ``proxy``), which this package loads only when one of their names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FlowRecord", "NetShape", "ShapedProxy", "measure"]

if TYPE_CHECKING:
    from devicelab.netshape.addon import NetShape
    from devicelab.netshape.proxy import ShapedProxy
    from devicelab.netshape.records import FlowRecord
    from devicelab.netshape.selfcheck import measure

_WHERE = {
    "FlowRecord": "devicelab.netshape.records",
    "NetShape": "devicelab.netshape.addon",
    "ShapedProxy": "devicelab.netshape.proxy",
    "measure": "devicelab.netshape.selfcheck",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
