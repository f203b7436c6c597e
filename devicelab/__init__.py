"""devicelab: performance checks of a Capacitor + Supabase messaging app on a device lab.

Importing devicelab has no side effects and imports nothing heavy: mitmproxy, playwright,
appium, psycopg and locust load only inside the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
