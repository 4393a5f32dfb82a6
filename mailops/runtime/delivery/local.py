"""Queue entries for domains this host keeps mailboxes for.

The SMTP handlers deliver local recipients at once and never queue them; an
entry reaches here when the configuration changed while it waited (a domain
moved to this host) or when a DSN is queued for a local sender. Delivery is
what the MX would have done: Maildir copies, and a new queue entry for
addresses an alias sends elsewhere, all committed together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mailops.runtime.delivery.client import Outcome
from mailops.runtime.durable import CommitError, PendingFile
from mailops.runtime.store.maildir import QuotaExceeded

if TYPE_CHECKING:
    from mailops.runtime.delivery.workers import Deps


async def deliver_local(
    deps: Deps,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    announce: Callable[[list[PendingFile]], None],
) -> dict[str, Outcome]:
    directory = deps.directory()
    hostname = deps.config().hostname
    outcomes: dict[str, Outcome] = {}
    files: list[PendingFile] = []
    remote: dict[str, None] = {}
    accepted: list[str] = []
    for rcpt in recipients:
        route = directory.route(rcpt)
        if route is None:
            outcomes[rcpt] = Outcome.local("failed", "5.1.1", f"<{rcpt}>: no such user", hostname)
            continue
        copies = []
        for account in route.mailboxes:
            copy = deps.maildir.prepare(
                account.domain, account.user, message, return_path=sender,
                delivered_to=account.address, quota=account.quota,
            )  # fmt: skip
            if isinstance(copy, QuotaExceeded):
                break
            copies.append(copy)
        else:
            files += copies
            remote.update(dict.fromkeys(route.remote))
            accepted.append(rcpt)
            continue
        for pending in copies:
            deps.maildir.abandon(pending)
        outcomes[rcpt] = Outcome.local("deferred", "4.2.2", f"<{rcpt}>: mailbox full", hostname)
    if remote:
        files.append(deps.queue.prepare(sender, list(remote), message)[1])
    try:
        await deps.committer.commit(files)
    except CommitError as exc:
        for pending in files:
            deps.maildir.abandon(pending)
        text = f"cannot store the message: {exc}"
        return outcomes | dict.fromkeys(accepted, Outcome.local("deferred", "4.3.0", text))
    announce(files)
    done = Outcome.local("delivered", "2.0.0", "delivered to mailbox", hostname)
    return outcomes | dict.fromkeys(accepted, done)
