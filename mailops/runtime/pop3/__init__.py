"""POP3 server (RFC 1939, 2449, 2595, 5034) on the store's INBOX."""

from mailops.runtime.pop3.server import POP3_SERVICES, Pop3Service

__all__ = ["POP3_SERVICES", "Pop3Service"]
