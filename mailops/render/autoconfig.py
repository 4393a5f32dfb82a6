"""Thunderbird autoconfig (`config-v1.1.xml`): how mail clients set themselves up.

Thunderbird, and clients that copy it (K-9/Thunderbird for Android, Evolution,
others), fetch http://autoconfig.<domain>/mail/config-v1.1.xml or
https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml and take the first
server of each kind that works. So the order below is the preference: implicit
TLS before STARTTLS (RFC 8314), IMAP before POP3 (one mailbox view for every
client), matching the SRV priorities in dns.py.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from mailops.spec.model import Host

# (spec service, XML server type, socketType): SSL means implicit TLS in this format.
INCOMING = (
    ("imaps", "imap", "SSL"),
    ("imap", "imap", "STARTTLS"),
    ("pop3s", "pop3", "SSL"),
    ("pop3", "pop3", "STARTTLS"),
)
OUTGOING = (
    ("submissions", "smtp", "SSL"),
    ("submission", "smtp", "STARTTLS"),
)


def autoconfig_xml(domain: str, host: Host) -> str:
    """The clientConfig (version 1.1) for `domain`, whose mailboxes live on `host`.

    Users log in with their full address (`%EMAILADDRESS%`), as the runtime's
    passwd-file keys them; the password travels in the clear only inside TLS,
    which every listed server requires before AUTH."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f"  <emailProvider id={quoteattr(domain)}>",
        f"    <domain>{escape(domain)}</domain>",
        f"    <displayName>{escape(domain)}</displayName>",
        f"    <displayShortName>{escape(domain)}</displayShortName>",
    ]
    for service, kind, socket in INCOMING:
        if service in host.services:
            lines += _server("incomingServer", kind, host, service, socket)
    for service, kind, socket in OUTGOING:
        if service in host.services:
            lines += _server("outgoingServer", kind, host, service, socket)
    lines += ["  </emailProvider>", "</clientConfig>"]
    return "\n".join(lines) + "\n"


def _server(tag: str, kind: str, host: Host, service: str, socket: str) -> list[str]:
    port = getattr(host.ports, service)
    return [
        f"    <{tag} type={quoteattr(kind)}>",
        f"      <hostname>{escape(host.fqdn)}</hostname>",
        f"      <port>{port}</port>",
        f"      <socketType>{socket}</socketType>",
        "      <authentication>password-cleartext</authentication>",
        "      <username>%EMAILADDRESS%</username>",
        f"    </{tag}>",
    ]
