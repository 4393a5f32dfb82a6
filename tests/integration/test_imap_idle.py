"""IDLE against a real `mailops serve`: a message accepted by SMTP wakes an IDLE
session on 993 within a second (the MDA notifies the store after its fsync)."""

from __future__ import annotations

import smtplib
import time

from tests.integration.mailserver import mail_server
from tests.runtime.imap_harness import RawClient


def test_mda_delivery_wakes_idle(tmp_path):
    with mail_server(tmp_path) as server:
        client = RawClient(server.ports["imaps"], server.client_context(), "mx1.example.test")
        assert b"OK" in client.call('LOGIN alice@example.test "alice-pw"')[-1]
        client.call("SELECT INBOX")
        client.send(b"i1 IDLE\r\n")
        assert client.line() == b"+ idling"
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as smtp:
            smtp.sendmail(
                "someone@remote.example", ["alice@example.test"], b"Subject: hi\r\n\r\nx\r\n"
            )
        assert client.line() == b"* 1 EXISTS"
        assert time.monotonic() - started < 1.0
        assert client.line() == b"* 1 RECENT"
        client.send(b"DONE\r\n")
        assert client.line().startswith(b"i1 OK")
