"""Mailbox storage: Maildir++ on disk. Protocol servers use this API, never file paths."""

from mailops.runtime.store.maildir import (
    InvalidMailboxName,
    Maildir,
    MaildirDelivery,
    QuotaExceeded,
    mailbox_path,
)

__all__ = ["InvalidMailboxName", "Maildir", "MaildirDelivery", "QuotaExceeded", "mailbox_path"]
