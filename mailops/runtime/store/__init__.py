"""Mailbox storage: Maildir++ on disk with a per-user SQLite index.

Protocol servers (POP3, IMAP) use this API — `Store`, `Mailbox`, `FolderView` — and
never touch file paths (DESIGN.md §3). The MDA prepares deliveries with
`MaildirDelivery` and tells the store after the group commit (`Store.delivered`).
"""

from mailops.runtime.store import names
from mailops.runtime.store.folder import MessageGone
from mailops.runtime.store.index import Message
from mailops.runtime.store.mailbox import (
    FolderExists,
    FolderInfo,
    FolderStatus,
    FolderView,
    Mailbox,
    NoSuchFolder,
    OverQuota,
    Store,
    StoreError,
    ViewChanges,
    opened,
)
from mailops.runtime.store.maildir import (
    InvalidMailboxName,
    Maildir,
    MaildirDelivery,
    QuotaExceeded,
    mailbox_path,
)
from mailops.runtime.store.names import DELIMITER, INBOX, SPECIAL_USE, InvalidFolderName
from mailops.runtime.store.notify import Notifier, Subscription

__all__ = [
    "DELIMITER",
    "INBOX",
    "SPECIAL_USE",
    "FolderExists",
    "FolderInfo",
    "FolderStatus",
    "FolderView",
    "InvalidFolderName",
    "InvalidMailboxName",
    "Mailbox",
    "Maildir",
    "MaildirDelivery",
    "Message",
    "MessageGone",
    "NoSuchFolder",
    "Notifier",
    "OverQuota",
    "QuotaExceeded",
    "Store",
    "StoreError",
    "Subscription",
    "ViewChanges",
    "mailbox_path",
    "names",
    "opened",
]
