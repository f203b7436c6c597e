"""The lockdownd of a fake iPhone, with pairing sessions (TLS), the diagnostics relay, the
notification proxy, the Web Inspector service and the DVT instruments server.

devicelab.testing.fake_usbmuxd pipes a client's ``Connect`` to port 62078 here, and a
``Connect`` to a port this lockdownd handed out with ``StartService`` to that service.
pymobiledevice3 then runs unchanged: ``create_using_usbmux`` validates the pairing and
starts a session, ``DiagnosticsService(lockdown).get_battery()`` reads the battery,
``DvtProvider(lockdown)`` reaches the instruments server, ``WebinspectorService(lockdown)``
lists the web views and inspects them.

What it serves, as a phone does:

- before a session: ``QueryType``, ``GetValue`` of the values a phone gives without one,
  ``Goodbye``; ``StartSession`` with the HostID of a host the phone trusts (the pair
  record :func:`pair_record` made for it when usbmuxd attached it paired) answers a
  SessionID and ``EnableSessionSSL``, then the connection turns into TLS (the phone's
  certificate on its side); an unknown HostID is ``InvalidHostID``; anything else is
  ``SessionInactive``;
- in a session: ``GetValue`` (every value), ``StartService`` (a port, ``EnableServiceSSL``)
  of ``com.apple.mobile.diagnostics_relay``, :data:`NOTIFICATION_PROXY` and
  :data:`WEBINSPECTOR` on every iOS version, and, while the developer disk image is
  mounted, of the instruments server: :data:`DVT_SECURE_PROXY` on iOS 14 to 16,
  :data:`DVT_LEGACY` before iOS 14; iOS 17 and later serve instruments over RemoteXPC
  only, so lockdownd answers ``InvalidService`` for both, as for any other service;
  ``StopSession``, ``Goodbye``;
- the diagnostics relay (TLS from the first byte): ``IORegistry`` with ``EntryClass``
  IOPMPowerSource answers the phone's battery entry (``FakeIPhone.battery``, called per
  request so a test can make it fall), other classes an empty entry; ``Goodbye``;
- the notification proxy (TLS from the first byte): ``ObserveNotification`` (relayed as
  ``RelayNotification`` {Name} whenever the name is posted, by any connection or by
  webinspectord), ``PostNotification``, ``Shutdown`` (answered ``ProxyDeath``); every
  posted name is recorded in ``notifications``;
- the Web Inspector service (devicelab.testing.fake_webinspector, one per connection,
  recorded in ``webinspector_servers``; TLS from the first byte) over the phone's
  ``webviews()``. With ``web_inspector()`` false (Settings > Safari > Advanced > Web
  Inspector off) it refuses as a phone does: it posts
  ``com.apple.webinspectord.disabled``, then holds the connection without a TLS handshake
  for a second and drops it;
- the instruments server (devicelab.testing.fake_dtx, one per connection, recorded in
  ``instruments``): TLS from the first byte on the secure proxy; on the legacy service a
  TLS handshake, then DTX in plaintext, as pymobiledevice3's ``strip_ssl`` expects.

The certificates are real (RSA, made once per process with ``cryptography``); nothing
checks the host's certificate against the root, as a fake need not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ssl
import struct
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devicelab.testing import usbmux_wire as wire
from devicelab.testing.fake_dtx import InstrumentsServer
from devicelab.testing.fake_webinspector import (
    WEBINSPECTOR,
    WEBINSPECTORD_DISABLED,
    FakeWebView,
    WebInspectorServer,
)

__all__ = [
    "DIAGNOSTICS_RELAY",
    "DVT_LEGACY",
    "DVT_SECURE_PROXY",
    "IPHONE_BATTERY",
    "NOTIFICATION_PROXY",
    "WEBINSPECTOR",
    "Lockdownd",
    "pair_record",
]

DIAGNOSTICS_RELAY = "com.apple.mobile.diagnostics_relay"
NOTIFICATION_PROXY = "com.apple.mobile.notification_proxy"
#: The instruments server over lockdown on iOS 14 to 16 (TLS throughout).
DVT_SECURE_PROXY = "com.apple.instruments.remoteserver.DVTSecureSocketProxy"
#: The instruments server over lockdown before iOS 14 (a TLS handshake, then plaintext).
DVT_LEGACY = "com.apple.instruments.remoteserver"
_TLS_RECORD = struct.Struct(">BHH")  # content type, version, length
# How long a refused Web Inspector connection is held before it is dropped: the client
# reads the disabled notification meanwhile, and retries when it missed it.
_REFUSAL_HOLD = 1.0
#: What an iPhone 11 on iOS 17 answers for IOPMPowerSource, on battery (InstantAmperage as
#: the unsigned 64-bit number some versions send for -312 mA).
IPHONE_BATTERY: dict[str, Any] = {
    "CurrentCapacity": 85,
    "MaxCapacity": 100,
    "InstantAmperage": (1 << 64) - 312,
    "Voltage": 3871,
    "Temperature": 3050,
    "IsCharging": False,
    "ExternalConnected": False,
    "FullyCharged": False,
    "CycleCount": 312,
}


@functools.cache
def _identity() -> dict[str, bytes]:
    """Root, host and device certificates and keys (PEM), made once per process."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def cert(name: str, subject_key: rsa.RSAPrivateKey, issuer: x509.Name | None,
             issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:  # fmt: skip
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(subject_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(issuer_key, hashes.SHA256())
        )

    def pem_key(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    root_key, host_key, device_key = key(), key(), key()
    root = cert("devicelab fake root", root_key, None, root_key)
    host = cert("devicelab fake host", host_key, root.subject, root_key)
    device = cert("devicelab fake iPhone", device_key, root.subject, root_key)
    pem = serialization.Encoding.PEM
    return {
        "root": root.public_bytes(pem),
        "root_key": pem_key(root_key),
        "host": host.public_bytes(pem),
        "host_key": pem_key(host_key),
        "device": device.public_bytes(pem),
        "device_key": pem_key(device_key),
    }


def _host_id(udid: str) -> str:
    """The HostID of this host in the phone ``udid``'s pair record."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"host-{udid}")).upper()


def pair_record(udid: str, buid: str) -> dict[str, Any]:
    """A pair record as usbmuxd stores it for a trusted phone, with real certificates."""
    ident = _identity()
    return {
        "DeviceCertificate": ident["device"],
        "EscrowBag": b"\x00" * 32,
        "HostCertificate": ident["host"],
        "HostID": _host_id(udid),
        "HostPrivateKey": ident["host_key"],
        "RootCertificate": ident["root"],
        "RootPrivateKey": ident["root_key"],
        "SystemBUID": buid,
        "WiFiMACAddress": "a4:83:e7:12:34:56",
    }


@functools.cache
def _server_context() -> ssl.SSLContext:
    """The phone's side of the TLS: its certificate, any client accepted."""
    ident = _identity()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    context.verify_mode = ssl.CERT_NONE
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "device.pem"
        path.write_bytes(ident["device"] + ident["device_key"])
        context.load_cert_chain(path)
    return context


@functools.cache
def _legacy_context() -> ssl.SSLContext:
    """The TLS of a pre-iOS 14 instruments handshake: TLS 1.2 at most, so no record (a
    TLS 1.3 session ticket) follows the handshake into what is plaintext afterwards."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    ident = _identity()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "device.pem"
        path.write_bytes(ident["device"] + ident["device_key"])
        context.load_cert_chain(path)
    return context


async def _handshake_then_plaintext(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Complete a TLS handshake as the server, then leave the streams in plaintext.

    The handshake runs in memory, fed one TLS record at a time, so no byte the client
    sends after it is taken from ``reader``. Raises ssl.SSLError or IncompleteReadError
    when the client does not complete it.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _legacy_context().wrap_bio(incoming, outgoing, server_side=True)
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if pending := outgoing.read():
            writer.write(pending)
            await writer.drain()
        if done:
            return
        header = await reader.readexactly(_TLS_RECORD.size)
        incoming.write(header + await reader.readexactly(_TLS_RECORD.unpack(header)[2]))


def _major(version: object) -> int:
    """The major number of a ProductVersion ("16.7.8" -> 16; 0 when unreadable)."""
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else 0


class Lockdownd:
    """The lockdownd of one fake phone (see the module docstring).

    ``values`` are its GetValue values, ``trusted`` the HostIDs it has paired with,
    ``battery`` returns its IOPMPowerSource entry, ``developer_image`` whether the
    developer disk image is mounted, ``instruments`` makes the instruments server of one
    connection, ``webviews`` returns the web views Web Inspector lists and
    ``web_inspector`` whether Web Inspector is on. ``services`` maps the ports handed out
    by StartService to the service names; ``instruments_servers`` and
    ``webinspector_servers`` list the servers made, oldest first; ``notifications`` the
    names posted through the notification proxy (or by webinspectord), oldest first.
    """

    PORT = wire.LOCKDOWN_PORT

    def __init__(
        self,
        udid: str,
        values: Mapping[str, Any],
        battery: Callable[[], Mapping[str, Any]],
        *,
        developer_image: Callable[[], bool] = lambda: True,
        instruments: Callable[[], InstrumentsServer] = InstrumentsServer,
        webviews: Callable[[], Sequence[FakeWebView]] = lambda: (),
        web_inspector: Callable[[], bool] = lambda: True,
    ) -> None:
        self.udid = udid
        self.values = values
        self.battery = battery
        self.developer_image = developer_image
        self.instruments = instruments
        self.trusted: set[str] = set()
        self.services: dict[int, str] = {}
        self.instruments_servers: list[InstrumentsServer] = []
        self.webviews = webviews
        self.web_inspector = web_inspector
        self.webinspector_servers: list[WebInspectorServer] = []
        self.notifications: list[str] = []
        # The notification proxy connections: the names each observes, and its writer.
        self._observers: list[tuple[set[str], asyncio.StreamWriter]] = []
        self._next_port = 49_152

    def offers(self, service: str) -> bool:
        """Whether StartService of ``service`` succeeds (see the module docstring)."""
        if service in (DIAGNOSTICS_RELAY, NOTIFICATION_PROXY, WEBINSPECTOR):
            return True
        major = _major(self.values.get("ProductVersion"))
        if service == DVT_SECURE_PROXY:
            return 14 <= major < 17 and self.developer_image()
        if service == DVT_LEGACY:
            return major < 14 and self.developer_image()
        return False

    def answer(self, request: Mapping[str, Any], *, session: bool) -> dict[str, Any]:
        """The reply to one lockdown request (StartSession and the TLS upgrade are
        :meth:`serve`'s)."""
        name = str(request.get("Request", ""))
        reply: dict[str, Any] = {"Request": name}
        if name == "QueryType":
            reply["Type"] = "com.apple.mobile.lockdown"
        elif name == "GetValue":
            key, domain = request.get("Key"), request.get("Domain")
            if key is not None:
                reply["Key"] = key
            if domain is not None:
                reply["Domain"] = domain
            values = {**self.values, "UniqueDeviceID": self.udid}
            if domain is None and key is None:
                reply["Value"] = values
            elif domain is None and key in values:
                reply["Value"] = values[key]
            else:
                reply["Error"] = "MissingValue"
        elif name == "Goodbye" or (name == "StopSession" and session):
            reply["Result"] = "Success"
        elif name == "StartService" and session:
            service = str(request.get("Service", ""))
            if not self.offers(service):
                reply["Error"] = "InvalidService"
            else:
                port = self._next_port
                self._next_port += 1
                self.services[port] = service
                reply.update(Service=service, Port=port, EnableServiceSSL=True)
        else:
            reply["Error"] = "SessionInactive"
        return reply

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve lockdown requests on a piped connection until the client goes."""
        session = False
        while True:
            request = await wire.read_lockdown(reader)
            if request.get("Request") == "StartSession" and not session:
                if request.get("HostID") not in self.trusted:
                    wire.write_lockdown(writer, {"Request": "StartSession",
                                                 "Error": "InvalidHostID"})  # fmt: skip
                    await writer.drain()
                    continue
                reply = {"Request": "StartSession", "SessionID": str(uuid.uuid4()).upper(),
                         "EnableSessionSSL": True}  # fmt: skip
                wire.write_lockdown(writer, reply)
                await writer.drain()
                await writer.start_tls(_server_context())
                session = True
                continue
            wire.write_lockdown(writer, self.answer(request, session=session))
            await writer.drain()

    async def serve_service(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve the service started on ``port`` until the client goes."""
        service = self.services[port]
        if service == WEBINSPECTOR and not self.web_inspector():
            self.post(WEBINSPECTORD_DISABLED)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), _REFUSAL_HOLD)
            return
        if service == DVT_LEGACY:
            try:
                await _handshake_then_plaintext(reader, writer)
            except ssl.SSLError:
                return  # a client that fails the handshake is dropped, as a phone drops it
        else:
            await writer.start_tls(_server_context())
        if service in (DVT_SECURE_PROXY, DVT_LEGACY):
            server = self.instruments()
            self.instruments_servers.append(server)
            await server.serve(reader, writer)
            return
        if service == WEBINSPECTOR:
            inspector = WebInspectorServer(self.webviews)
            self.webinspector_servers.append(inspector)
            await inspector.serve(reader, writer)
            return
        if service == NOTIFICATION_PROXY:
            await self._serve_notification_proxy(reader, writer)
            return
        while True:
            request = await wire.read_lockdown(reader)
            name = request.get("Request")
            if name == "IORegistry":
                entry = (
                    dict(self.battery()) if request.get("EntryClass") == "IOPMPowerSource" else {}
                )
                reply: dict[str, Any] = {"Status": "Success", "Diagnostics": {"IORegistry": entry}}
            elif name == "Goodbye":
                reply = {"Status": "Success"}
            else:
                reply = {"Status": "UnknownRequest"}
            wire.write_lockdown(writer, reply)
            await writer.drain()
            if name == "Goodbye":
                return

    def post(self, name: str) -> None:
        """Post the notification ``name``: every notification proxy connection observing it
        gets a ``RelayNotification``. Runs on the fake usbmuxd's loop, as the services do."""
        self.notifications.append(name)
        for observed, writer in self._observers:
            if name in observed and not writer.is_closing():
                wire.write_lockdown(writer, {"Command": "RelayNotification", "Name": name})

    async def _serve_notification_proxy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        observed: set[str] = set()
        self._observers.append((observed, writer))
        try:
            while True:
                request = await wire.read_lockdown(reader)
                command, name = request.get("Command"), str(request.get("Name", ""))
                if command == "ObserveNotification":
                    observed.add(name)
                elif command == "PostNotification":
                    self.post(name)
                elif command == "Shutdown":
                    wire.write_lockdown(writer, {"Command": "ProxyDeath"})
                    await writer.drain()
                    return
                await writer.drain()  # relays that PostNotification queued, ours included
        finally:
            self._observers = [o for o in self._observers if o[1] is not writer]
