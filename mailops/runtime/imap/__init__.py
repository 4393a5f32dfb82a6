"""The IMAP server (RFC 3501 and the extensions clients use), on the mailbox store."""

from mailops.runtime.imap.server import IMAP_SERVICES, ImapService

__all__ = ["IMAP_SERVICES", "ImapService"]
