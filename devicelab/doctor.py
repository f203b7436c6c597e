"""What the machine has for devicelab, and the command that installs what it lacks."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "diagnose"]

_APT = "apt-get install -y"


@dataclass(frozen=True)
class Finding:
    """One thing devicelab uses: whether it is there, what it is, and how to get it."""

    name: str
    found: bool
    detail: str
    fix: str
    required: bool = True
    needed_for: str = ""


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"does not run ({exc.__class__.__name__})"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else f"exit {done.returncode}"


def _program(
    name: str, paths: list[str], version_flag: str, fix: str, needed_for: str, required: bool
) -> Finding:
    for candidate in paths:
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            detail = f"{path}: {_version([path, version_flag])}"
            return Finding(name, True, detail, "", required, needed_for)
    return Finding(name, False, "not found", fix, required, needed_for)


def _postgres() -> Finding:
    """The PostgreSQL binaries as the backend commands will look for them."""
    from backend_checks.managed import find_bindir
    from devicelab.errors import DeviceLabError

    needed_for = "backend checks (managed local cluster)"
    try:
        found = find_bindir()
    except DeviceLabError as exc:  # $DEVICELAB_PG_BINDIR without them; none installed
        given = os.environ.get("DEVICELAB_PG_BINDIR")
        detail = exc.message if given else "initdb/pg_ctl not found"
        fix = exc.hint if given else f"{_APT} postgresql-15"
        return Finding("postgresql", False, detail, fix, True, needed_for)
    return Finding("postgresql", True, str(found), "", True, needed_for)


def _module(name: str, package: str, needed_for: str, required: bool = True) -> Finding:
    found = importlib.util.find_spec(name) is not None
    fix = f"pip install '{package}'"
    detail = "importable" if found else "not installed"
    return Finding(f"python: {package}", found, detail, "" if found else fix, required, needed_for)


#: The Appium drivers devicelab's phones need: automationName -> (npm package, for what).
APPIUM_DRIVERS = {
    "uiautomator2": ("appium-uiautomator2-driver", "android devices"),
    "xcuitest": ("appium-xcuitest-driver", "ios devices, with Appium on macOS"),
}


def _appium() -> list[Finding]:
    """The Appium devicelab starts (tools/appium, APPIUM_HOME) and the phone drivers in it;
    else an ``appium`` on PATH (its drivers are its own: not listed)."""
    from devicelab.platforms.appium_server import appium_home, installed, installed_drivers

    home = appium_home()
    version = installed(home)
    if not version:
        found = _program("appium", ["appium"], "--version", "./dev/setup (installs tools/appium)",
                         "android and ios devices", required=False)  # fmt: skip
        if not found.found:
            found = Finding("appium", False, f"not installed in {home} nor on PATH",
                            found.fix, False, found.needed_for)  # fmt: skip
        return [found]
    drivers = installed_drivers(home)
    listed = ", ".join(sorted(drivers)) or "none"
    findings = [Finding("appium", True, f"{home}: appium {version}; drivers: {listed}", "",
                        False, "android and ios devices")]  # fmt: skip
    for name, (package, needed_for) in APPIUM_DRIVERS.items():
        fix = f"cd {home} && npm install --save-exact {package}" if name not in drivers else ""
        detail = drivers.get(name, f"not installed in {home}")
        findings.append(
            Finding(f"appium driver: {name}", name in drivers, detail, fix, False, needed_for)
        )
    return findings


def diagnose() -> list[Finding]:
    """Every tool and package devicelab uses, found or missing, with the fix for each."""
    python_ok = sys.version_info >= (3, 12)
    hypopg = list(Path("/usr/share/postgresql").glob("*/extension/hypopg.control"))
    findings = [
        Finding(
            "python",
            python_ok,
            f"{sys.executable}: {sys.version.split()[0]}",
            "" if python_ok else "use Python >= 3.12 (mitmproxy 12 requires it)",
            True,
            "everything",
        ),
        _program(
            "chromium",
            ["chromium", "/usr/bin/chromium", "chromium-browser"],
            "--version",
            f"{_APT} chromium",
            "the web device",
            True,
        ),
        _program(
            "chromedriver",
            ["chromedriver", "/usr/bin/chromedriver"],
            "--version",
            f"{_APT} chromium-driver",
            "Appium's chromium driver (webview path)",
            False,
        ),
        _program(
            "node", ["node"], "--version", f"{_APT} nodejs npm", "the capacitor harness", False
        ),
        _program("npm", ["npm"], "--version", f"{_APT} npm", "the capacitor harness", False),
        _program(
            "adb",
            ["adb"],
            "version",
            f"{_APT} adb (or the adb bundled with adbutils)",
            "android devices",
            False,
        ),
        *_appium(),
        _postgres(),
        Finding(
            "hypopg",
            bool(hypopg),
            str(hypopg[0]) if hypopg else "extension not installed",
            "" if hypopg else f"{_APT} postgresql-15-hypopg",
            False,
            "proving index suggestions",
        ),
        _module("mitmproxy", "mitmproxy>=12", "network shaping"),
        _module("playwright", "playwright", "the web device"),
        _module("psycopg", "psycopg[binary]", "backend checks"),
        _module("adbutils", "adbutils", "android devices", required=False),
        _module("pymobiledevice3", "devicelab[ios]", "ios devices", required=False),
        _module("locust", "locust", "backend load", required=False),
        _usbmuxd(),
        _tunneld(),
    ]
    return findings


def _tunneld() -> Finding:
    """pymobiledevice3's tunneld, through which iOS 17+ iPhones give sysmontap (the app's
    CPU and memory): whether something listens where devicelab asks it."""
    import socket

    from devicelab.errors import ProbeFailed
    from devicelab.samplers.ios_sysmon import TUNNELD_ENV, tunneld_address

    needed_for = "CPU and memory of iOS 17+ iPhones"
    try:
        host, port = tunneld_address()
    except ProbeFailed as exc:
        return Finding("tunneld", False, str(exc), exc.hint, False, needed_for)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            found = True
    except OSError:
        found = False
    if found:
        return Finding("tunneld", True, f"{host}:{port} answers", "", False, needed_for)
    fix = (
        f"sudo pymobiledevice3 remote tunneld (or set {TUNNELD_ENV}=HOST:PORT); "
        "iOS 14-16: pymobiledevice3 mounter auto-mount instead"
    )
    return Finding("tunneld", False, f"{host}:{port} does not answer", fix, False, needed_for)


def _usbmuxd() -> Finding:
    """usbmuxd, which pymobiledevice3 talks to (USBMUXD_SOCKET_ADDRESS ``HOST:PORT`` or a
    socket path, else /var/run/usbmuxd): whether something answers there, probed briefly
    as ``devicelab devices`` would reach it (a set variable or a stale socket file is not
    a usbmuxd)."""
    address = os.environ.get("USBMUXD_SOCKET_ADDRESS", "") or "/var/run/usbmuxd"
    why = _no_answer(address)
    if not why:
        return Finding("usbmuxd", True, f"{address} answers", "", False, "ios devices")
    fix = (
        f"{_APT} usbmuxd (it starts when an iPhone is plugged in), or point "
        "USBMUXD_SOCKET_ADDRESS at the usbmuxd that runs"
    )
    return Finding("usbmuxd", False, f"{address}: {why}", fix, False, "ios devices")


def _no_answer(address: str) -> str:
    """Why nothing answers at ``address`` (``HOST:PORT`` or a socket path), "" when
    something accepts a connection within 0.5 s."""
    import socket

    host, _, port = address.rpartition(":")
    tcp = bool(host) and port.isdigit() and not address.startswith("/")
    if tcp and not 1 <= int(port) <= 65535:
        return f"{port} is not a TCP port (1-65535)"
    probe = socket.socket(socket.AF_INET if tcp else socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect((host, int(port)) if tcp else address)
    except TimeoutError:
        return "no answer within 0.5 s"
    except FileNotFoundError:
        return "no such socket"
    except OSError:
        return "nothing listens there"
    finally:
        probe.close()
    return ""
