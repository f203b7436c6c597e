"""ShapedProxy: a mitmproxy with the NetShape addon, started and stopped from Python.

Lifecycle: ``start()`` (or ``with ShapedProxy(...) as proxy``) brings the proxy up and
returns once it listens (``proxy.port`` is the real port when 0 was asked for); runtime
control (``set_profile``, ``go_offline``, ``go_online``, ``records``) works while it runs;
``stop()`` releases the listening port first, then shuts mitmproxy down, so a new proxy can
start on the same port at once.

Two modes: ``thread`` (default) runs mitmproxy in-process on its own event loop in a
thread (starts in ~0.1 s once mitmproxy is imported; mitmproxy keeps one global context,
so one in-process proxy at a time, and a busy main thread delays it through the GIL);
``subprocess`` runs ``python -m devicelab.netshape.serve`` and drives it over its stdin and
stdout (any number at once; its log lines go on to the ``devicelab.netshape`` logger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, Self

from devicelab.errors import BadInput, EnvironmentProblem
from devicelab.models.network import NetworkProfile
from devicelab.models.proxy_status import ProxyStatus
from devicelab.netshape import ca
from devicelab.netshape.addon import DEFAULT_ALLOW, NetShape, check_offline_seconds
from devicelab.netshape.listen import check_listen_host
from devicelab.netshape.options import allow_networks, dump_networks
from devicelab.netshape.proxy_process import forward_log, serve_argv, start_error
from devicelab.netshape.proxy_thread import LISTEN_ERRORS, Ready, run_in
from devicelab.netshape.records import FlowRecord
from devicelab.netshape.upstream_tls import LoopbackUpstreamTls

__all__ = ["DEFAULT_CONFDIR", "ShapedProxy"]

DEFAULT_CONFDIR = "~/.mitmproxy"
_START_TIMEOUT_S = 15.0
_CONTROL_TIMEOUT_S = 30.0
_in_process_lock = threading.Lock()


class ShapedProxy:
    """A shaping HTTP(S)/WebSocket proxy on ``host:port`` for the clients in ``allow``."""

    def __init__(
        self,
        profile: NetworkProfile | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow: Sequence[str] = DEFAULT_ALLOW,
        confdir: str | os.PathLike[str] = DEFAULT_CONFDIR,
        mode: Literal["thread", "subprocess"] = "thread",
        ws_history: int = 200,
        verify_upstream: bool = True,
        upstream_ca: str | os.PathLike[str] | None = None,
        aliases: Mapping[str, str] | None = None,
        networks: Mapping[str, NetworkProfile] | None = None,
        http2: bool = True,
    ) -> None:
        if mode not in ("thread", "subprocess"):
            raise BadInput(f"unknown proxy mode {mode!r}", hint="use 'thread' or 'subprocess'")
        if not 0 <= port <= 65535:
            raise BadInput(f"port {port} is out of range", hint="use 0..65535 (0: a free port)")
        self.profile = profile
        self.host = host
        self.port = port
        self.allow = list(allow)
        self.confdir = Path(confdir).expanduser()
        self.mode = mode
        self.ws_history = ws_history
        # False for lab backends off this machine with self-signed certificates (the
        # device still sees mitmproxy's CA); never turn it off for servers on the
        # internet. Servers on loopback are never verified (``upstream_tls``).
        self.verify_upstream = verify_upstream
        # The CAs servers are verified against (a PEM bundle): a test server's own CA.
        # Default: $SSL_CERT_FILE when it names a file (as OpenSSL reads it), else
        # mitmproxy's certifi bundle.
        self.upstream_ca = ca.upstream_ca(upstream_ca)
        # Names only the proxy resolves (a lab backend on its loopback), name -> host.
        self.aliases = dict(aliases or {})
        # Profiles the control endpoint's POST profile switches to by name.
        self.networks = dict(networks or {})
        # False: devices and servers speak HTTP/1.1 through the proxy. Over HTTP/2 the
        # streams of one connection share its place in the link, and a server may push
        # megabytes into the loopback socket buffers ahead of it (docs/netshape.md).
        self.http2 = http2
        self.addon = NetShape()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._master: Any = None
        self._ready: Future[tuple[str, int]] = Future()
        self._process: subprocess.Popen[str] | None = None
        self._control_lock = threading.Lock()
        self._forwarder: threading.Thread | None = None
        self._holds_lock = False

    # --- public surface -----------------------------------------------------------------
    @property
    def url(self) -> str:
        """The proxy URL clients on this machine use, e.g. ``http://127.0.0.1:8080`` (a
        proxy listening on every address, ``0.0.0.0`` or ``::``, is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate (PEM) to install on devices so HTTPS can be shaped.

        mitmproxy creates it in ``confdir`` on first start; ``.cer`` and ``.p12`` forms sit
        next to it (iOS takes the ``.pem`` through a profile, Android the ``.cer``).
        """
        return self.confdir / ca.CA_CERT_NAME

    def start(self) -> Self:
        """Start the proxy and return once it listens.

        Raises BadInput, before anything starts, when ``host`` is not an address of this
        machine (as ``devicelab proxy --listen`` says it: "cannot listen on HOST:PORT: not
        an address of this machine", "... is not an IP address", "... does not resolve")
        or ``allow`` is not a list of networks (as ``netshape_allow`` says it), and when
        another option is wrong; EnvironmentProblem when it cannot listen (port taken),
        has no usable confdir, runs already, or another in-process proxy runs.
        Interrupted (Ctrl-C), it stops what it began.
        """
        if self._process is not None or self._thread is not None:
            # A second proxy in its place would leave the first one serving, unstoppable.
            raise EnvironmentProblem(
                f"this shaped proxy is already running on {self.url}", hint="call stop() first"
            )
        # The command line's checks, so a bad address or allow-list reads the same here
        # (mitmproxy's "could not bind on any address out of [...]" said neither why nor
        # what to do, and its allow option took 10.0.0.1/8 as 10.0.0.0/8).
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        check_listen_host(self.host, named=f"cannot listen on {where}", address=where)
        allow_networks(self.allow)
        try:
            ca.check_confdir(self.confdir)
            ca.ensure_ca(self.confdir)
            if self.mode == "subprocess":
                self._start_subprocess()
            else:
                self._start_thread()
        except BaseException:
            self.stop()  # a child still starting would keep its port while we live
            raise
        return self

    def stop(self) -> None:
        """Release the port, cut the connections and stop; safe to call twice."""
        if self._process is not None:
            self._stop_subprocess()
        if self._thread is not None or self._holds_lock:
            self._stop_thread()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_profile(self, profile: NetworkProfile | str | None) -> None:
        """Switch the network profile now (bytes already on the link keep their timing).

        ``profile`` is a NetworkProfile, a profile id such as ``"slow-3g"`` (looked up in
        ``networks``, else in profiles/networks.yaml), or None for an unshaped link.
        Raises UnknownId (with the closest id) for an id no profile has, ConfigError when
        networks.yaml cannot be read, and EnvironmentProblem when the proxy is not running.
        """
        if isinstance(profile, str):
            from devicelab.config import network_profile

            profile = self.networks.get(profile) or network_profile(profile)
        self.profile = profile
        text = profile.model_dump_json() if profile else ""
        if self._process is not None:
            self._command("profile", profile=text)
        else:
            self._call(lambda: self._master.options.update(netshape_profile=text))

    def go_offline(self, seconds: float | None = None) -> None:
        """Cut every connection, and every request of a new one, for ``seconds`` (None:
        until online). Raises BadInput when ``seconds`` is not a positive number."""
        try:
            check_offline_seconds(seconds)
        except ValueError as exc:
            raise BadInput(
                str(exc), hint="e.g. go_offline(5), or go_offline() until online"
            ) from None
        if self._process is not None:
            self._command("offline", seconds=seconds)
        else:
            self._call(lambda: self.addon.go_offline(seconds))

    def go_online(self) -> None:
        """Accept connections again."""
        if self._process is not None:
            self._command("online")
        else:
            self._call(self.addon.go_online)

    def status(self) -> ProxyStatus:
        """The addon's state: ``profile``, ``offline``, ``links`` (client -> open
        connections). Raises EnvironmentProblem when the proxy is not running."""
        if self._process is not None:
            return ProxyStatus.model_validate(self._command("status"))
        result: ProxyStatus = self._call(self.addon.status)
        return result

    def records(self) -> list[FlowRecord]:
        """The per-flow timing records so far (bytes, start, first byte, end)."""
        if self._process is not None:
            return [FlowRecord(**r) for r in self._command("records")]
        result: list[FlowRecord] = self._call(self.addon.records)
        return result

    # --- thread mode --------------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        if self._loop is None:
            raise EnvironmentProblem("the proxy is not running", hint="call start() first")

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _start_thread(self) -> None:
        self._holds_lock = _in_process_lock.acquire(blocking=False)
        if not self._holds_lock:
            raise EnvironmentProblem(
                "another in-process shaped proxy is running",
                hint="stop it first, or use ShapedProxy(..., mode='subprocess')",
            )
        self._ready = Future()
        # A restart begins online with no records, as a new subprocess does: the old addon
        # kept its offline state (every request dropped) and the last start's flows.
        self.addon = NetShape()
        try:
            # In the try: a Ctrl-C during the import held the lock for the process's life.
            _import_mitmproxy_addons()
            self._thread = threading.Thread(target=self._thread_main, name="netshape", daemon=True)
            self._thread.start()
            self.host, self.port = self._ready.result(timeout=_START_TIMEOUT_S)
        except BaseException:
            # A proxy that reported its failure (it could not listen) is shutting down
            # already: asking it again would race its loop's end.
            failed = self._ready.done() and self._ready.exception() is not None
            self._stop_thread(ask=not failed)
            raise

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def _serve(self) -> None:
        from mitmproxy import exceptions, master, options
        from mitmproxy.addons import core, next_layer, onboarding, proxyserver, tlsconfig

        self._loop = asyncio.get_running_loop()
        logging.getLogger("mitmproxy.addons.proxyserver").addFilter(LISTEN_ERRORS)  # once
        opts = options.Options()
        self._master = master.Master(opts)
        # A lean set of mitmproxy's addons: the proxy server, TLS interception (so HTTPS is
        # shaped too) and mitm.it for the CA certificate; nothing that rewrites traffic.
        mitm_addons: list[Any] = [
            core.Core,
            proxyserver.Proxyserver,
            next_layer.NextLayer,
            tlsconfig.TlsConfig,
            onboarding.Onboarding,
        ]
        # LoopbackUpstreamTls after TlsConfig: it relaxes the server TLS that one builds.
        self._master.addons.add(
            *(make() for make in mitm_addons),
            self.addon,
            LoopbackUpstreamTls(),
            Ready(self._ready, self.host, self.port),
        )
        settings: Any = opts
        addon_log, held = logging.getLogger("mitmproxy.addonmanager"), ca.HeldErrors()
        addon_log.addFilter(held)
        try:
            settings.update(
                mode=["regular"],
                listen_host=self.host,
                listen_port=self.port,
                confdir=str(self.confdir),
                netshape_profile=self.profile.model_dump_json() if self.profile else "",
                netshape_allow=self.allow,
                netshape_ws_history=self.ws_history,
                netshape_aliases=[f"{k}={v}" for k, v in self.aliases.items()],
                netshape_networks=dump_networks(self.networks),
                ssl_insecure=not self.verify_upstream,
                http2=self.http2,
            )
            if self.upstream_ca:
                settings.update(ssl_verify_upstream_trusted_ca=self.upstream_ca)
        except exceptions.OptionsError as exc:
            raise BadInput(f"bad proxy option: {exc}", hint="check --listen and --allow") from exc
        finally:
            addon_log.removeFilter(held)
        # mitmproxy makes or loads its CA as the options are applied, and only logs a
        # failure: it would listen and close every HTTPS connection.
        if problem := ca.missing_ca(self._master.addons.get("tlsconfig"), self.confdir, held):
            raise problem
        held.release(addon_log)
        await self._master.run()

    def _stop_thread(self, *, ask: bool = True) -> None:
        """Stop the proxy's thread: ask its loop to shut down (``ask``; else it is ending
        on its own) and wait for it; release the in-process lock."""
        thread = self._thread
        if ask and thread is not None and thread.is_alive():
            # A start interrupted before it listened: let it listen (or fail) first, as a
            # shutdown would race its servers coming up (and its loop may not exist yet).
            with contextlib.suppress(Exception):
                self._ready.exception(timeout=_START_TIMEOUT_S)
        loop = self._loop
        if not ask and thread is not None:
            thread.join(timeout=10)
        if loop is not None and thread is not None and thread.is_alive():

            async def shutdown() -> None:
                # Free the port before anything else, so a restart on it works at once.
                await self._master.addons.get("proxyserver").servers.update([])
                self.addon.cut_all()
                self._master.shutdown()

            pending = shutdown()
            if not run_in(loop, thread, pending, timeout=10):
                # It ran, or the loop ended without running it (it was shutting down on its
                # own, e.g. after failing to listen): nothing runs it now. Closing it is a
                # no-op in the first case, and spares the "never awaited" warning in the
                # second. (Still running after the timeout: it is the loop's, not ours.)
                pending.close()
            thread.join(timeout=10)
        self._thread = None
        self._loop = None
        if self._holds_lock:
            self._holds_lock = False
            _in_process_lock.release()

    # --- subprocess mode ----------------------------------------------------------------
    def _start_subprocess(self) -> None:
        argv = serve_argv(self)
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Out of our process group: a terminal's Ctrl-C (or a runner's SIGTERM to the
            # group) is ours to handle, and the proxy must outlive it until our teardown
            # stops it (it died first, and the teardown's commands met a broken pipe). A
            # parent killed outright is still noticed: serve's --parent-pid watch.
            start_new_session=True,
        )
        line = _read_line(self._process, _START_TIMEOUT_S)
        if not line.startswith("listening on "):
            # Its stdout ended (it failed and is exiting) or it stayed silent: its error is
            # on stderr once it has exited.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            stderr = self._process.stderr
            err = stderr.read() if stderr and self._process.poll() is not None else ""
            self._stop_subprocess()
            raise start_error(err or line)
        host, _, port = line.removeprefix("listening on ").strip().rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        # Its log goes on to ours as it comes: a pipe nobody reads fills at 64 KB (some
        # 900 "refused client" lines), and then the proxy blocks on its next log line.
        self._forwarder = threading.Thread(
            target=forward_log, args=(self._process,), name="netshape-log", daemon=True
        )
        self._forwarder.start()

    def _stop_subprocess(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.join(timeout=5)  # it reads the log to its end, then closes it
        streams = (process.stdin, process.stdout, None if forwarder else process.stderr)
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _command(self, op: str, **fields: Any) -> Any:
        """Run ``op`` in the subprocess over its stdin/stdout (not through the proxy: its
        allow-list may exclude loopback, and its link would shape the control's bytes and
        theirs would compete with the device's). Returns the result; raises BadInput (the
        proxy refused the value) or EnvironmentProblem (it does not answer)."""
        process = self._process
        assert process is not None and process.stdin is not None
        with self._control_lock:
            try:
                process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
                process.stdin.flush()
            except OSError as exc:
                raise _exited(process, op) or EnvironmentProblem(
                    f"the proxy subprocess does not answer: {exc}", hint="is it running?"
                ) from None
            line = _read_line(process, _CONTROL_TIMEOUT_S)
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError:
            raise _exited(process, op) or EnvironmentProblem(
                f"the proxy subprocess did not answer {op!r} in {_CONTROL_TIMEOUT_S:g} s",
                hint="is it running?",
            ) from None
        if not reply.get("ok"):
            raise BadInput(f"the proxy refused {op!r}: {reply.get('error')}", hint="see --help")
        return reply.get("result")


def _import_mitmproxy_addons() -> None:
    """Import mitmproxy's addons here, in the caller's thread, with ldap3's warnings off.

    They import ldap3 (for proxy auth, which we do not use), and ldap3 warns about pyasn1
    names as it loads: in a suite run with ``-W error`` (``filterwarnings = error``) the
    warning became an exception in the proxy's thread and the proxy never started, and
    otherwise it is noise in the user's warnings summary. Warning filters are process-wide,
    so they are changed here, before the proxy's thread exists.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ldap3(\.|$)")
        import mitmproxy.addons  # noqa: F401


def _exited(process: subprocess.Popen[str], op: str) -> EnvironmentProblem | None:
    """The error for ``op`` sent to a proxy process that has ended (a crash, a kill), said
    at once rather than as a broken pipe or a timeout; None while it runs. Its pipes at
    their end mean it is ending: it gets a second to be reaped."""
    try:
        code = process.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return None
    return EnvironmentProblem(
        f"the proxy subprocess has exited (code {code}) and cannot {op!r}",
        hint="its log above says why; start the proxy again",
    )


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, or "" when it prints none within ``timeout``."""
    result: list[str] = []
    reader = threading.Thread(
        target=lambda: result.append(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""
