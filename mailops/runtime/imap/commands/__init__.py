"""IMAP command handlers, one module per family; importing them registers them."""

from mailops.runtime.imap.commands import (  # noqa: F401
    auth,
    fetch,
    mailboxes,
    search,
    selected,
    store,
)
