"""Route a device's traffic through the shaped proxy, and undo it.

- Android (USB): ``adb reverse tcp:PORT tcp:PORT`` makes the proxy reachable as the
  phone's own 127.0.0.1:PORT, then ``settings put global http_proxy 127.0.0.1:PORT``
  sends the apps' HTTP(S) and WebSocket traffic there. Undo: the previous http_proxy
  value (``:0`` clears it at once; Android applies a deleted setting only after a reboot)
  and ``adb reverse --remove``. Each change is journaled before it is made
  (devicelab.journal), so it is undone on exit, on Ctrl-C and at the next start after a
  crash (``android_undoers()`` gives the journal what it needs).
- Web (Playwright): ``playwright_proxy(url)`` is the ``proxy=`` launch setting. Chromium
  alone never proxies loopback; ``<-loopback>`` lifts that so a local backend is shaped
  too (Playwright adds it for Chromium itself; it is kept explicit for other launchers).
  Nothing on a device changes, so nothing is journaled.
- iOS: no API sets a proxy from a computer; see docs/netshape.md (manual Wi-Fi proxy or
  mitmproxy's WireGuard mode, and the CA profile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Self

from devicelab.errors import DeviceUnreachable
from devicelab.journal import Entry, Journal, Undoer

__all__ = [
    "HTTP_PROXY_KIND",
    "REVERSE_KIND",
    "AndroidRoute",
    "android_undoers",
    "playwright_proxy",
]

HTTP_PROXY_KIND = "android.http_proxy"
REVERSE_KIND = "android.reverse"
# Values of `settings get global http_proxy` that mean "no proxy".
_NO_PROXY = ("", "null", ":0")


class _Adb(Protocol):
    serial: str

    def shell(self, cmd: str) -> str: ...

    def reverse(self, remote: str, local: str) -> None: ...

    def reverse_remove(self, remote: str) -> None: ...


def playwright_proxy(proxy_url: str, *, proxy_loopback: bool = True) -> dict[str, str]:
    """Playwright's ``proxy`` setting for a browser launched through the shaped proxy.

    With ``proxy_loopback`` (default) loopback addresses go through the proxy too. For
    HTTPS, trust the proxy's CA or create the context with ``ignore_https_errors=True``.
    """
    setting = {"server": proxy_url}
    if proxy_loopback:
        setting["bypass"] = "<-loopback>"
    return setting


def _adb_call(device: _Adb, command: str, call: Callable[[], Any]) -> Any:
    """Run one adb call; adbutils' errors become DeviceUnreachable."""
    from adbutils.errors import AdbError

    try:
        return call()
    except (AdbError, OSError) as exc:
        raise DeviceUnreachable(
            f"adb {command} failed on {device.serial}: {exc}",
            hint="is the device connected and authorized (`adb devices`)?",
            serial=device.serial,
            command=command,
            stderr=str(exc),
        ) from exc


def _clear_or_restore(device: _Adb, previous: str) -> None:
    value = ":0" if previous in _NO_PROXY else previous
    command = f"settings put global http_proxy {value}"
    _adb_call(device, command, lambda: device.shell(command))


class AndroidRoute:
    """An Android device routed through the proxy on ``port``; ``with`` applies and undoes.

    Lifecycle: ``apply()`` journals then makes each change; ``undo()`` reverts them, newest
    first. Raises DeviceUnreachable when adb fails (changes made so far stay journaled).
    """

    def __init__(self, device: _Adb, port: int, journal: Journal) -> None:
        self.device = device
        self.port = port
        self.journal = journal
        self._entries: list[Entry] = []

    def apply(self) -> Self:
        """Reverse the port and set the global http_proxy; returns self."""
        device, remote = self.device, f"tcp:{self.port}"
        previous = str(
            _adb_call(
                device, "settings get", lambda: device.shell("settings get global http_proxy")
            )
        ).strip()
        self._entries.append(self.journal.record(REVERSE_KIND, device.serial, {"remote": remote}))
        _adb_call(device, f"reverse {remote}", lambda: device.reverse(remote, remote))
        self._entries.append(
            self.journal.record(HTTP_PROXY_KIND, device.serial, {"previous": previous})
        )
        command = f"settings put global http_proxy 127.0.0.1:{self.port}"
        _adb_call(device, command, lambda: device.shell(command))
        return self

    def undo(self) -> None:
        """Restore the previous http_proxy and remove the reverse; logs failures, goes on."""
        entries, self._entries = self._entries, []
        undoers = android_undoers(lambda serial: self.device)
        self.journal.undoers.update(undoers)
        self.journal.undo(entries)

    def __enter__(self) -> Self:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.undo()


def _adbutils_device(serial: str) -> _Adb:
    import adbutils

    device: _Adb = adbutils.adb.device(serial=serial)
    return device


def android_undoers(device_for: Callable[[str], _Adb] = _adbutils_device) -> dict[str, Undoer]:
    """The journal's undoers for Android routing changes; ``device_for(serial)`` finds one."""

    def undo_proxy(entry: Entry) -> None:
        _clear_or_restore(device_for(entry.target), str(entry.data.get("previous", "")))

    def undo_reverse(entry: Entry) -> None:
        device, remote = device_for(entry.target), str(entry.data["remote"])
        _adb_call(device, f"reverse --remove {remote}", lambda: device.reverse_remove(remote))

    return {HTTP_PROXY_KIND: undo_proxy, REVERSE_KIND: undo_reverse}
