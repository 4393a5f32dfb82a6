"""Small specs for the audit's unit tests, and an AuditContext made from one."""

from __future__ import annotations

from pathlib import Path

from mailops.audit.context import AuditContext, AuditOptions, prepare
from mailops.spec.load import load_spec

SMALL = """\
version: 1
hosts:
  mx1:
    fqdn: mx1.example.test
    ipv4: 192.0.2.10
    tls: {tls}
domains:
  example.test:
    mailbox_host: mx1
    mx: [{{host: mx1, priority: 10}}]
    users:
      alice:
        password_hash: "{{BLF-CRYPT}}$2b$05$abcdefghijklmnopqrstuu5s2v8.iMN4Ob5xq7bF0J8w0z5r8dE2i"
    aliases: {{postmaster: alice}}
"""


def small_context(
    folder: Path, tls: str = "{cert: /etc/tls/mx1.pem, key: /etc/tls/mx1.key}", **options
) -> AuditContext:
    path = folder / "spec.yaml"
    path.write_text(SMALL.format(tls=tls))
    options.setdefault("resolver", "127.0.0.1:1")
    return prepare(load_spec(path), AuditOptions(**options))
