"""The errors devicelab raises, split by what the caller does next.

    DeviceLabError                  base; every error has a one-line message and a hint
    ├── BadInput                    exit 2: the user fixes the command line or a file
    │   ├── ConfigError             a YAML file is wrong (file:line:column, field path)
    │   ├── UnknownId               an unknown device or network id ("did you mean")
    │   ├── UnsafeActionRefused     a write or a change we refuse without an explicit flag
    │   └── SignInRefused           the API refused the sign-in: the URL, key or test user
    └── EnvironmentProblem          exit 3: the machine, a device or a server is not ready
        ├── ToolMissing             a program or package is not installed
        ├── DeviceUnreachable       a device is offline, unauthorized or gone
        ├── BackendUnavailable      a database or API server cannot be reached
        │   ├── ApiUnreachable      the API did not answer at all (refused, reset, silent)
        │   └── PortInUse           the port a server is to listen on is taken
        ├── ProbeFailed             a tool or server answered, but not as it should
        │   └── ProbeTimedOut       a probe gave no answer within its timeout
        └── DeviceLeftChanged       a run could not put a device back (it carries the
                                    run's results)

Foreign exceptions (adbutils, pymobiledevice3, selenium/appium, psycopg, mitmproxy) are
translated inside the module that calls the library, with ``raise ... from``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: this module imports nothing of devicelab
    from devicelab.models import Results

__all__ = [
    "ApiUnreachable",
    "BackendUnavailable",
    "BadInput",
    "ConfigError",
    "DeviceLabError",
    "DeviceLeftChanged",
    "DeviceUnreachable",
    "EnvironmentProblem",
    "PortInUse",
    "ProbeFailed",
    "ProbeTimedOut",
    "SignInRefused",
    "ToolMissing",
    "UnknownId",
    "UnsafeActionRefused",
    "first_line",
]


class DeviceLabError(Exception):
    """Base of every devicelab error: ``message`` says what, ``hint`` says what to do next."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and the hint on one line, as the CLI prints it."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class BadInput(DeviceLabError):
    """The input is wrong: a flag, a file, an id. Exit code 2."""

    exit_code = 2


class ConfigError(BadInput):
    """A YAML file does not match its model.

    ``location`` is ``file:line:column``; ``field`` is the dotted path of the field.
    """

    def __init__(
        self, message: str, *, hint: str = "", location: str = "", field: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.location = location
        self.field = field


class UnknownId(BadInput):
    """A device or network id that the inventory or the profiles do not know."""

    def __init__(self, kind: str, given: str, known: list[str], *, source: str = "") -> None:
        import difflib

        # Case first: "WIFI" is "wifi", though difflib sees four letters that differ.
        same = [k for k in known if k.casefold() == given.casefold()]
        close = same or difflib.get_close_matches(given, known, n=1, cutoff=0.4)
        where = f" in {source}" if source else ""
        message = f"unknown {kind} {given!r}{where}"
        if close:
            message += f"; did you mean {close[0]!r}?"
        super().__init__(message, hint=f"known {kind}s: {', '.join(sorted(known))}")
        self.kind = kind
        self.given = given
        self.suggestion = close[0] if close else None


class UnsafeActionRefused(BadInput):
    """We refuse to write or change something without an explicit flag."""


class SignInRefused(BadInput):
    """The API answered the sign-in, and what it said is the user's to fix: the URL (no
    Auth there), the anon key, or the test user's email or password. Exit 2."""


class EnvironmentProblem(DeviceLabError):
    """The machine, a device or a server is not ready. Exit code 3."""

    exit_code = 3


class ToolMissing(EnvironmentProblem):
    """A program or a Python package is not installed; the hint names the install command."""

    def __init__(self, tool: str, *, hint: str = "") -> None:
        super().__init__(f"{tool} is not installed", hint=hint)
        self.tool = tool


class DeviceUnreachable(EnvironmentProblem):
    """A device is offline, unauthorized or gone."""

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        serial: str = "",
        command: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.serial = serial
        self.command = command
        self.stderr = stderr


class BackendUnavailable(EnvironmentProblem):
    """A database or an API server cannot be reached (the message never holds a password)."""


class ApiUnreachable(BackendUnavailable):
    """The API did not answer at all (refused, reset, timed out), as opposed to answering
    no: during a run, the sign that it went away."""


class PortInUse(BackendUnavailable):
    """The port to listen on is taken (by another server, or one that bound it first)."""


class ProbeFailed(EnvironmentProblem):
    """A tool or a server answered, but not as it should."""

    def __init__(
        self, message: str, *, hint: str = "", command: str = "", stderr: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command
        self.stderr = stderr


class ProbeTimedOut(ProbeFailed):
    """A probe gave no answer within ``timeout_s`` (what it started may still run); the
    hint, set here, names the longer timeout."""

    def __init__(self, message: str, timeout_s: float) -> None:
        super().__init__(
            message,
            hint="a slower link needs a longer probe timeout: "
            "Lab(..., options=ScenarioOptions(probe_timeout_s=...)) (180 s by default)",
        )
        self.timeout_s = timeout_s


class DeviceLeftChanged(EnvironmentProblem):
    """A run ended with a device it could not put back (a phone that went offline
    mid-run): the changes stay pending in the journal. ``results`` holds the run's checks
    (already written, reports included); exit 3. Made by devicelab.teardown.left_changed."""

    def __init__(self, message: str, *, hint: str, results: Results | None = None) -> None:
        super().__init__(message, hint=hint)
        self.results = results


def first_line(exc: BaseException) -> str:
    """The first line of a foreign exception's text (its class name when it has none), for
    the one-line messages devicelab prints and records."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
