"""A real MQTT broker (mosquitto) on loopback for the telemetry tests, with users and ACLs.

amqtt (the pure-Python broker) speaks MQTT 3.1.1 only: no response topic, no correlation
data. mosquitto speaks MQTT 5; `.ci/run` installs it with apt-get when it is missing.

Logins (password = name + "pw"): ``tool`` (the run processes: reads and writes ald/#),
``alice`` (an operator), ``bob`` (a watcher). Anonymous clients may read everything and
publish commands without a sender level (so that aldctl sees, refuses and journals them).
The ACL binds a command's sender level to the login: ``pattern write ald/+/cmd/+/%u``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent
FAST = HERE / "fast.yaml"
ACL = """\
topic read ald/#
topic write ald/+/cmd/+

user tool
topic readwrite ald/#

user alice
topic read ald/#

user bob
topic read ald/#

pattern write ald/+/cmd/+/%u
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate with CN=tool."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aldctl test CA",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "tool")):
        ssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            *(["-extfile", "san.ext"] if name == "server" else []),
        )


class Mosquitto:
    def __init__(self, root: Path, *, tls: bool = False) -> None:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if exe is None:
            pytest.fail("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
        self.exe = exe
        self.root = root
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        pw = root / "passwd"
        pw.touch(mode=0o600)
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user in ("tool", "alice", "bob"):
            subprocess.run([passwd, "-b", str(pw), user, f"{user}pw"], check=True)
        (root / "acl").write_text(ACL)
        (root / "data").mkdir()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"password_file {pw}",
            f"acl_file {root / 'acl'}",
            # Sessions and queued messages survive a kill -9 of the broker: saved at every
            # change (a test-sized load), so a historian's persistent session is still there.
            "persistence true",
            f"persistence_location {root / 'data'}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_queued_messages 100000",
            f"log_dest file {root / 'mosquitto.log'}",
            "log_type all",
        ]
        self.tls_port: int | None = None
        if tls:  # a second listener: TLS, client certificates required, CN = user name
            make_certs(root)
            self.tls_port = free_port()
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {root / 'ca.pem'}",
                f"certfile {root / 'server.pem'}",
                f"keyfile {root / 'server.key'}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        if os.getuid() == 0:  # as root, mosquitto drops to user "mosquitto" unless told
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        (root / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.root / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "mosquitto.log").read_text(errors="replace")
        return ""


@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    root = tmp_path / "broker"
    root.mkdir()
    m = Mosquitto(root, tls=bool(getattr(request, "param", False)))
    m.start()
    try:
        yield m
    finally:
        m.kill()


def tool_config(
    path: Path,
    broker: Mosquitto,
    name: str,
    *,
    commands: bool = False,
    allow: tuple[str, ...] = (),
    credentials: Path | bool | None = None,
    url: str | None = None,
    **telemetry: Any,
) -> Path:
    """The built-in simulated reactor, named ``name``, publishing to ``broker``."""
    from aldctl.config import builtin_text

    doc = yaml.safe_load(builtin_text())
    doc["name"] = name
    if credentials is None:
        credentials = path.parent / f"{name}.cred"
        credentials.write_text("tool\ntoolpw\n")
        credentials.chmod(0o600)
    doc["telemetry"] = {
        "broker": url or broker.url,
        **({"credentials_file": str(credentials)} if credentials else {}),
        "sample_interval": "50 ms",
        "commands": {"enabled": commands, "allow": list(allow)},
        **telemetry,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def aldctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "aldctl", *args]
