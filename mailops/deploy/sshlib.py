"""paramiko, imported once and only when a host is reached over SSH, and the
TCP socket its connections run on.

Two costs are avoided here:

- paramiko.config imports `invoke` when it is installed, only to run the
  `Match exec` lines of ssh_config files, which mailops never reads. That
  import (and the asyncio, unittest.mock and yaml it pulls in) takes longer
  than the rest of paramiko; paramiko is imported with `invoke` hidden.
- OpenSSH's sshd sets TCP_NODELAY only for interactive sessions, so on an
  exec session its short replies wait for our acknowledgement (Nagle), which
  Linux delays by up to 40 ms. The socket turns off Nagle on our side and
  acknowledges every segment at once (TCP_QUICKACK, Linux only): a login
  takes ~35 ms instead of ~80 ms on loopback, opening the session channel
  ~3 ms instead of ~45 ms.
"""

from __future__ import annotations

import socket
import sys
import threading
from types import ModuleType

_import_lock = threading.Lock()


def paramiko_module() -> ModuleType:
    """The paramiko module (imported on first use, thread-safe)."""
    module = sys.modules.get("paramiko")
    if module is not None and getattr(module, "SSHClient", None) is not None:
        return module
    with _import_lock:
        hide = "invoke" not in sys.modules
        if hide:
            sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` fails
        try:
            import paramiko as module
        finally:
            if hide and sys.modules.get("invoke", False) is None:
                del sys.modules["invoke"]
    return module


class _QuickAckSocket(socket.socket):
    """A socket that acknowledges what it receives at once. Linux clears
    TCP_QUICKACK after a while, so it is set again before every read."""

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return super().recv(size, flags)


def connect_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection for request-and-answer traffic (raises OSError)."""
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not hasattr(socket, "TCP_QUICKACK"):
            return sock
        quick = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    except BaseException:
        sock.close()
        raise
    quick.settimeout(timeout)
    return quick
