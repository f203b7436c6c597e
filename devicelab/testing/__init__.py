"""Fakes and loopback peers shipped for users' suites and ours.

Heavy dependencies load inside each module, never here.
"""

__all__: list[str] = []
