"""ShapedProxy's subprocess mode, the parent's side: the command line that starts
``python -m devicelab.netshape.serve`` (``serve``), its log lines passed on to ours, and
its error turned into ours when it does not start.

``ShapedProxy`` (``proxy``) starts the process, reads its first line and drives it over its
stdin and stdout; these helpers hold no state of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from devicelab.errors import BadInput, DeviceLabError, EnvironmentProblem
from devicelab.netshape.options import dump_networks

if TYPE_CHECKING:
    from devicelab.netshape.proxy import ShapedProxy

__all__ = ["forward_log", "serve_argv", "start_error"]

_log = logging.getLogger("devicelab.netshape")


def serve_argv(proxy: ShapedProxy) -> list[str]:
    """The command line of the serve process that runs ``proxy`` as configured, with its
    control over stdin/stdout."""
    argv = [sys.executable, "-m", "devicelab.netshape.serve"]
    argv += ["--listen", f"{proxy.host}:{proxy.port}", "--confdir", str(proxy.confdir)]
    argv += ["--profile-json", proxy.profile.model_dump_json() if proxy.profile else ""]
    argv += ["--ws-history", str(proxy.ws_history), "--parent-pid", str(os.getpid())]
    if not proxy.verify_upstream:
        argv.append("--no-verify-upstream")
    if proxy.upstream_ca:
        argv += ["--upstream-ca", proxy.upstream_ca]
    if not proxy.http2:
        argv.append("--no-http2")
    for cidr in proxy.allow:
        argv += ["--allow", cidr]
    for name, host in proxy.aliases.items():
        argv += ["--alias", f"{name}={host}"]
    if proxy.networks:
        argv += ["--networks-json", dump_networks(proxy.networks)]
    argv.append("--control-stdio")
    return argv


def start_error(text: str) -> DeviceLabError:
    """The subprocess's own error line as ours: its exit class and its hint kept (a bad
    option is BadInput, as in thread mode), its info lines left out."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("netshape: error: ")]
    last = (errors or lines or ["no output"])[-1].removeprefix("netshape: error: ")
    # Its one_line(): "message (hint: hint)"; ours would add a second hint to it.
    message, has_hint, hint = last.partition(" (hint: ")
    hint = hint.removesuffix(")") if has_hint else ""
    if "bad proxy option" in message or "bad profile" in message:
        return BadInput(message[-400:], hint=hint or "see the option's help")
    return EnvironmentProblem(
        f"the proxy subprocess did not start: {message[-400:]}",
        hint=hint or "is the port free and the address local?",
    )


def forward_log(process: subprocess.Popen[str]) -> None:
    """The subprocess's log lines to our ``devicelab.netshape`` logger, until it ends."""
    stream = process.stderr
    if stream is None:
        return
    levels = logging.getLevelNamesMapping()
    with stream, contextlib.suppress(OSError, ValueError):  # ends as the proxy stops
        for line in stream:
            text = line.rstrip().removeprefix("netshape: ")
            name, _, message = text.partition(" ")
            if name in levels and message:
                _log.log(levels[name], "%s", message)
            elif text:
                _log.info("%s", text)
