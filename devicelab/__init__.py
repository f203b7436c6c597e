"""devicelab: performance checks of a Capacitor + Supabase messaging app on a device lab.

Importing devicelab has no side effects and imports nothing heavy: mitmproxy, playwright,
appium, psycopg and locust load only inside the functions that need them.
"""

from __future__ import annotations

# Light (signal, threading): the one thing a script of the Python API needs from the
# top so that SIGTERM (systemd, a cancelled job) restores the phone (docs/device_run.md).
from devicelab.interrupts import sigterm_as_interrupt

__version__ = "0.1.0"

__all__ = ["__version__", "sigterm_as_interrupt"]
