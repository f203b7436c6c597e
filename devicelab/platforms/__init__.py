"""Devices: web (Playwright), android (adbutils), ios (pymobiledevice3), appium.

Each platform module has the same small contract (create / close / info); the lab
orders their start and teardown.
"""

__all__: list[str] = []
