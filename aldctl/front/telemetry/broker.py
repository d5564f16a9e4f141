"""What every MQTT client of aldctl shares: the topic tree, and how to reach a broker.

Topic tree (``<prefix>`` is ``ald`` unless the tool config says otherwise)::

    <prefix>/<tool>/online           "online" | "offline" (retained; the last will)
    <prefix>/<tool>/state            run state, recipe, cycle n/N, ETA, active alarms,
                                     dropped messages (retained JSON)
    <prefix>/<tool>/telemetry        the latest channel values, at the configured interval
    <prefix>/<tool>/event            state changes, units, steps, doses, messages
    <prefix>/<tool>/pulse            one record per dose pulse (timing errors)
    <prefix>/<tool>/alarm            warnings, holds, aborts
    <prefix>/<tool>/cmd/<verb>/<sender>   remote commands (see publisher.py)
    <prefix>/<tool>/reply/<sender>   answers, when the command named no response topic

Every message but ``online`` is a JSON object with ``tool``, ``run_id`` and, for the
streams, ``seq`` (one counter per run across every stream: a historian deduplicates on
(run_id, seq), a gap is a dropped or lost message) and ``wall`` (Unix time it happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aldctl import yamlsrc
from aldctl.diagnostics import UserError

if TYPE_CHECKING:
    import aiomqtt

    from aldctl.config import TlsSpec

STREAMS = ("telemetry", "event", "pulse", "alarm")
DEFAULT_PREFIX = "ald"
MQTT_VERSIONS = ("5", "3.1.1")
USERNAME_ENV = "ALDCTL_MQTT_USERNAME"
PASSWORD_ENV = "ALDCTL_MQTT_PASSWORD"


def topic(prefix: str, tool: str, *rest: str) -> str:
    return "/".join((prefix, tool, *rest))


def split(topic_name: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, list[str]] | None:
    """(tool, the levels after it) of a topic under ``prefix``, or None."""
    parts = topic_name.split("/")
    if len(parts) < 3 or parts[0] != prefix:
        return None
    return parts[1], parts[2:]


@dataclass(frozen=True)
class Broker:
    """Where a broker is and how to log in: built from a URL, credentials and TLS options."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    url: str = ""
    mqtt_version: str = "5"
    """"5" or "3.1.1": brokers that speak only 3.1.1 refuse an MQTT 5 CONNECT."""

    @property
    def v5(self) -> bool:
        return self.mqtt_version == "5"

    def client(self, **kw: Any) -> aiomqtt.Client:
        import aiomqtt

        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            tls_context=self.tls,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            # Small messages go out at once, not batched by Nagle's algorithm behind the
            # previous one's ACK (tens of ms of latency on telemetry).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            **kw,
        )


class Messages:
    """aiomqtt's message iterator with a timeout that never loses a message.

    Cancelling ``anext(client.messages)`` (``asyncio.wait_for``) right as a message arrives
    drops that message (aiomqtt 2.5: the inner queue task completed, its result is never
    returned). Here one ``anext`` is kept pending across timeouts instead.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._it = aiter(client.messages)
        self._next: asyncio.Future[aiomqtt.Message] | None = None

    async def get(self, within: float) -> aiomqtt.Message | None:
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._it))
        done, _ = await asyncio.wait({self._next}, timeout=within)
        if not done:
            return None
        fut, self._next = self._next, None
        return fut.result()

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
            self._next = None


def read_credentials(path: Path) -> tuple[str, str]:
    try:
        # A regular file of bounded size: a FIFO or /dev/zero given by mistake must not hang.
        lines = yamlsrc.read_bounded(path).decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the MQTT credentials file {path}: {exc.strerror}") from None
    if len(lines) < 2 or not lines[0].strip():
        raise UserError(
            f"{path}: an MQTT credentials file holds the user name on its first "
            "line and the password on its second"
        )
    return lines[0].strip(), lines[1].rstrip("\n")


def tls_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"TLS setup for the MQTT broker failed: {exc}") from None
    return ctx


def connect_info(
    url: str,
    *,
    credentials_file: Path | None = None,
    username_env: str = USERNAME_ENV,
    password_env: str = PASSWORD_ENV,
    tls: TlsSpec | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    mqtt_version: str = "5",
) -> Broker:
    """The broker a URL names, with credentials from a file, else the environment, else the
    URL's user name (no password: anonymous or certificate login)."""
    u = urlsplit(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise UserError(f"broker URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    if u.password is not None:
        raise UserError(
            "a password in the broker URL shows in `ps` and shell history: use "
            f"${password_env} or a credentials file"
        )
    secure = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if secure else 1883)
    except ValueError:
        raise UserError(f"broker URL {url!r}: the port is not a number") from None
    user: str | None = u.username
    password: str | None = None
    if credentials_file is not None:
        user, password = read_credentials(credentials_file)
    elif os.environ.get(username_env):
        user = os.environ[username_env]
        password = os.environ.get(password_env)
    if tls is not None:
        ca, cert, key = tls.ca, tls.cert, tls.key
    if mqtt_version not in MQTT_VERSIONS:
        raise UserError(
            f"MQTT version {mqtt_version!r}: expected one of {', '.join(MQTT_VERSIONS)}"
        )
    ctx = tls_context(ca, cert, key) if secure or ca or cert else None
    return Broker(u.hostname, port, user, password, ctx, url, mqtt_version)
