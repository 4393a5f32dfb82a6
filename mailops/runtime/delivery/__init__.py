"""Outbound delivery: the queue's way out (DESIGN.md §4 "Outbound").

router.py    where a recipient's mail goes: relay, backup forward, or MX by priority
resolver.py  DNS lookups (MX, A/AAAA, TXT) with dnspython's async resolver
client.py    SMTP client sessions (aiosmtplib): STARTTLS, AUTH, a connection pool
mtasts.py    RFC 8461 policies: fetched over HTTPS, cached, enforced
retry.py     the retry schedule: exponential backoff up to the queue lifetime
bounce.py    RFC 3464 delivery status notifications (failed and delayed)
dkim.py      DKIM signing of outgoing mail; Authentication-Results for incoming
workers.py   the scheduler: concurrency limits, attempts, state, restarts
"""
