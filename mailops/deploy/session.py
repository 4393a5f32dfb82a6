"""A conversation with the agent on one host: start it, send requests, read
progress events and answers. One session per host per command."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from mailops.deploy.agent import boot, wire
from mailops.deploy.connection import Connection, agent_command
from mailops.deploy.errors import AgentError, ConnectionLost, DeployError


class AgentSession:
    def __init__(self, connection: Connection, login_user: str | None, needs_root: bool):
        self.connection = connection
        self.host_id = connection.host_id
        self.pipe = connection.run(agent_command(login_user, needs_root))
        self._send(boot.agent_sources())

    def _send(self, data: bytes) -> None:
        try:
            self.pipe.write(data)
        except (OSError, EOFError) as exc:
            raise self._lost(f"while sending ({exc})") from None

    def call(
        self, op: str, args: dict, blobs=(), on_event: Callable[[str], None] | None = None
    ) -> tuple[dict, list[bytes]]:
        self._send(wire.encode(dict(args, op=op), list(blobs)))
        while True:
            try:
                frame = wire.receive(self.pipe)
            except wire.WireError as exc:
                raise self._lost("in the middle of an answer", exc.line) from None
            except (OSError, EOFError) as exc:
                raise self._lost(f"({exc})") from None
            if frame is None:
                raise self._lost(f"before answering {op}")
            message, reply_blobs = frame
            if "event" in message:
                if on_event:
                    on_event(message["event"])
                continue
            if not message.get("ok"):
                prefix = "agent bug: " if message.get("internal") else ""
                raise AgentError(f"{self.host_id}: {prefix}{message.get('error')}")
            return message["result"], reply_blobs

    def _lost(self, when: str, line: bytes = b"") -> DeployError:
        """Why the agent stopped talking: too old a Python, none, or a lost connection."""
        code, stderr = self.pipe.finish()
        text = line.decode(errors="replace")
        if text.startswith(boot.TOO_OLD_MARK) or code == boot.TOO_OLD_EXIT:
            version = text[len(boot.TOO_OLD_MARK) :].strip() or "older than 3.11"
            return DeployError(
                f"{self.host_id}: the host's python3 is {version}; mailops needs Python ≥ 3.11 "
                "there (install python3.11 or newer as python3)"
            )
        if code == 127 or "python3: not found" in stderr or "No such file" in stderr:
            return DeployError(
                f"{self.host_id}: python3 not found on the host; mailops needs Python ≥ 3.11 there"
            )
        if "sudo" in stderr and "password" in stderr:
            return DeployError(
                f"{self.host_id}: sudo wants a password; allow {self.connection.description} "
                "to run python3 with sudo without one (NOPASSWD), or log in as root"
            )
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return ConnectionLost(
            f"{self.host_id}: the connection was lost {when}"
            + (f": {detail}" if detail else "")
            + "; the host keeps its old or its new files; apply again to converge"
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the session is over either way
            self.pipe.finish()
        self.connection.close()
