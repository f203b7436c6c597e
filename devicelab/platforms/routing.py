"""Route a device's traffic through the shaped proxy, and undo it.

- Android (USB): ``adb reverse tcp:PORT tcp:PORT`` makes the proxy reachable as the
  phone's own 127.0.0.1:PORT, then ``settings put global http_proxy 127.0.0.1:PORT``
  sends the apps' HTTP(S) and WebSocket traffic there. Undo: the previous http_proxy
  value (``:0`` clears it at once; Android applies a deleted setting only after a reboot)
  and ``adb reverse --remove`` (or the user's own reverse of that port, put back). Each
  change is journaled before it is made (devicelab.journal), so it is undone on exit, on
  Ctrl-C, when ``apply()`` itself fails half-way, and at the next start after a crash
  (``android_undoers()`` gives the journal what it needs). One run at a time routes a
  phone (``Journal.claim``): a second one would save the first one's proxy as the phone's
  own and restore it after both. Each entry also holds the value devicelab set, and an
  undo puts the previous value back only while the phone still holds devicelab's: a
  proxy or reverse the user set by hand since (after a crash, say) is left alone.
- Web (Playwright): ``playwright_proxy(url)`` is WebDevice's ``proxy=`` launch setting. Chromium
  alone never proxies loopback; ``<-loopback>`` lifts that so a local backend is shaped
  too (Playwright adds it for Chromium itself; it is kept explicit for other launchers).
  Nothing on a device changes, so nothing is journaled.
- iOS: no API sets a proxy from a computer; see docs/netshape.md (manual Wi-Fi proxy or
  mitmproxy's WireGuard mode, and the CA profile).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from typing import Any, Protocol, Self

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed, first_line
from devicelab.journal import Claim, Entry, Journal, Undoer, held_interrupts

__all__ = [
    "HTTP_PROXY_KIND",
    "REVERSE_KIND",
    "AndroidRoute",
    "adb_shell",
    "android_undoers",
    "changed_since",
    "playwright_proxy",
]

logger = logging.getLogger("devicelab.platforms.routing")

HTTP_PROXY_KIND = "android.http_proxy"
REVERSE_KIND = "android.reverse"
# Values of `settings get global http_proxy` that mean "no proxy".
_NO_PROXY = ("", "null", ":0")
# What `cmd settings` prints when it fails; over the legacy shell protocol of old phones the
# exit code can be lost, the text is not.
_FAILED = ("Failure calling service", "Exception", "Permission Denial")


class _ShellReturn(Protocol):
    returncode: int
    output: str


class _ReverseItem(Protocol):
    remote: str
    local: str


class _Adb(Protocol):
    serial: str

    def shell2(self, cmd: str, *, v2: bool = ...) -> _ShellReturn: ...

    def reverse(self, remote: str, local: str) -> None: ...

    def reverse_remove(self, remote: str) -> None: ...

    def reverse_list(self) -> Sequence[_ReverseItem]: ...


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


def adb_shell(device: _Adb, command: str) -> str:
    """Run ``command`` in the device's shell; returns its output, stripped.

    Raises DeviceUnreachable when adb fails, ProbeFailed when the command fails on the
    phone (a non-zero exit or `cmd settings`' failure text)."""
    # Shell protocol v2 where the phone has it (Android 7+): the exit code comes in a
    # packet of its own, not parsed out of the output after the error text.
    result = _adb_call(device, f"shell {command}", lambda: device.shell2(command, v2=True))
    output = str(result.output).strip()
    if result.returncode != 0 or any(mark in output for mark in _FAILED):
        said = first_line(Exception(output)) if output else "no output"
        raise ProbeFailed(
            f"adb shell {command} failed on {device.serial} (exit {result.returncode}): {said}",
            hint=f"run `adb -s {device.serial} shell {command}` to see why: a device policy "
            "(work profile, MDM) can forbid global settings; a reboot mends a broken "
            "settings service",
            command=command,
            stderr=output,
        )
    return output


def _clear_or_restore(device: _Adb, previous: str) -> None:
    value = ":0" if previous in _NO_PROXY else previous
    adb_shell(device, f"settings put global http_proxy {shlex.quote(value)}")


def changed_since(device: _Adb, entry: Entry, setting: str) -> bool:
    """Whether ``setting`` (e.g. "global http_proxy") no longer holds the value ``entry``
    says devicelab set (``data["set"]``), i.e. someone changed it since; then it is logged
    that the user's value is left alone. False for entries without ``set`` (older lines).
    Raises DeviceUnreachable, ProbeFailed when the phone cannot be read."""
    ours = entry.data.get("set")
    if ours is None:
        return False
    now = adb_shell(device, f"settings get {setting}")
    if now == str(ours):
        return False
    logger.warning(
        "left %s on %s as it is (%s): it was changed after devicelab set %s",
        setting.rsplit(maxsplit=1)[-1],
        entry.target,
        now,
        ours,
    )
    return True


def _unset(value: str) -> str:
    return "unset" if value in (*_NO_PROXY, "null") else value


def _valid_port(port: object) -> int:
    # bool is an int to Python, never a port; a str would reach the device shell.
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInput(
            f"proxy port {port!r} is not a TCP port",
            hint="give the shaped proxy's port, a whole number from 1 to 65535",
        )
    return port


class AndroidRoute:
    """An Android device routed through the proxy on ``port``; ``with`` applies and undoes.

    Lifecycle: ``apply()`` claims the device, journals then makes each change (and undoes
    them if it fails half-way); ``undo()`` reverts them, newest first, and lets the device
    go. Raises BadInput for a port outside 1..65535.
    """

    def __init__(self, device: _Adb, port: int, journal: Journal, *, claimed: bool = False) -> None:
        self.device = device
        self.port = _valid_port(port)
        self.journal = journal
        self._entries: list[Entry] = []
        self._claim: Claim | None = None
        # The caller already holds the device's claim (AndroidDevice takes it when it
        # attaches) and lets it go itself.
        self._claimed = claimed

    def apply(self) -> Self:
        """Reverse the port and set the global http_proxy; returns self.

        Raises EnvironmentProblem when another run routes this device; DeviceUnreachable
        when adb fails and ProbeFailed when the phone refuses a setting (then what was
        already changed is undone before the error goes on)."""
        if not self._claimed:
            self._claim = self.journal.claim(self.device.serial, "routed")
        try:
            self._apply()
        except BaseException:
            # Ctrl-C or an adb error inside `with AndroidRoute(...)`'s __enter__: __exit__
            # never runs, so the half-made route is undone here.
            self.undo()
            raise
        return self

    def _apply(self) -> None:
        device, remote = self.device, f"tcp:{self.port}"
        previous = adb_shell(device, "settings get global http_proxy")
        if len(previous.splitlines()) > 1:
            raise ProbeFailed(
                f"settings get global http_proxy on {device.serial} answered {previous!r}",
                hint=f"run `adb -s {device.serial} shell settings get global http_proxy`",
                command="settings get global http_proxy",
                stderr=previous,
            )
        listed = _adb_call(device, "reverse --list", device.reverse_list)
        own = next((item.local for item in listed if item.remote == remote), None)
        data = {"remote": remote, "local": remote, "what": f"adb reverse {remote}"}
        if own is not None:
            data["previous"] = own
        self._entries.append(self.journal.record(REVERSE_KIND, device.serial, data))
        _adb_call(device, f"reverse {remote}", lambda: device.reverse(remote, remote))
        ours = f"127.0.0.1:{self.port}"
        what = f"http_proxy {ours} (was {_unset(previous)})"
        proxy = {"previous": previous, "set": ours, "what": what}
        self._entries.append(self.journal.record(HTTP_PROXY_KIND, device.serial, proxy))
        adb_shell(device, f"settings put global http_proxy {ours}")

    @property
    def left(self) -> list[Entry]:
        """This route's changes not undone yet (after ``undo()``: those it could not
        undo), oldest first."""
        return list(self._entries)

    def undo(self) -> None:
        """Restore the previous http_proxy and the reverse; logs failures. Raises nothing
        but HeldInterrupt, once every step ran, when a Ctrl-C came during them.

        The device is let go once nothing is left to undo; a failed change stays pending
        (retried by a second ``undo()`` or the next run) and the device stays claimed."""
        # Held around the bookkeeping too: the Ctrl-C comes once the phone's state is known.
        with held_interrupts():
            entries, self._entries = self._entries, []
            self.journal.undoers.update(android_undoers(lambda serial: self.device))
            failed = {entry.id for entry, _ in self.journal.undo(entries)}
            self._entries = [entry for entry in entries if entry.id in failed]
            if not self._entries and self._claim is not None:
                self._claim.release()
                self._claim = None

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
        device = device_for(entry.target)
        if not changed_since(device, entry, "global http_proxy"):
            _clear_or_restore(device, str(entry.data.get("previous", "")))

    def undo_reverse(entry: Entry) -> None:
        device, remote = device_for(entry.target), str(entry.data["remote"])
        ours = entry.data.get("local")
        if ours is not None:
            listed = _adb_call(device, "reverse --list", device.reverse_list)
            now = next((item.local for item in listed if item.remote == remote), None)
            if now is not None and now != ours:
                logger.warning(
                    "left adb reverse %s on %s as it is (to %s): it was changed after "
                    "devicelab set it",
                    remote,
                    entry.target,
                    now,
                )
                return
        own = entry.data.get("previous")
        if own:  # the user's own reverse of that port, which ours replaced
            local = str(own)
            _adb_call(device, f"reverse {remote} {local}", lambda: device.reverse(remote, local))
            return
        try:
            _adb_call(device, f"reverse --remove {remote}", lambda: device.reverse_remove(remote))
        except DeviceUnreachable as exc:
            # adbd drops its listeners when the phone is replugged or rebooted: gone is undone.
            if "not found" not in exc.stderr:
                raise
            logger.info("reverse %s on %s was already gone", remote, entry.target)

    return {HTTP_PROXY_KIND: undo_proxy, REVERSE_KIND: undo_reverse}
