"""After the first apply on this machine: how to send and read a first message."""

from __future__ import annotations

from mailops.deploy.layout import Layout
from mailops.spec.load import LoadedSpec


def first_steps(loaded: LoadedSpec, layout: Layout) -> str:
    spec = loaded.spec
    host = spec.hosts[layout.host_id]
    domain = next((d for d, v in spec.domains.items() if v.mailbox_host == layout.host_id), None)
    if domain is None:
        return ""
    users = sorted(spec.domains[domain].users)
    if not users:
        return ""
    to = f"{users[-1]}@{domain}"
    address = (
        host.listen[0] if host.listen and host.listen[0] not in ("0.0.0.0", "::") else "127.0.0.1"
    )
    smtp = host.ports.smtp
    local, _, _ = to.partition("@")
    maildir = f"{layout.data_dir}/mail/{domain}/{local}/new/"
    lines = [
        f"mail for {domain} is served on {address} (runtime log: {layout.data_dir}/mailops.log)",
        "send a first message:",
        f"  swaks --server {address}:{smtp} --to {to}",
        "  or: python3 -c \"import smtplib; smtplib.SMTP('"
        f"{address}', {smtp}).sendmail('you@example.net', ['{to}'], "
        "'Subject: hello\\n\\nmy first message')\"",
        "read it:",
        f"  ls {maildir}",
    ]
    if "pop3s" in host.services:
        lines.append(f"  curl -k pop3s://{address}:{host.ports.pop3s}/1 -u {to}   (its password)")
    lines.append(f"stop it: mailops service {loaded.path} stop")
    return "\n".join(lines)
