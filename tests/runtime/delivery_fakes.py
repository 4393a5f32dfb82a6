"""Stand-ins shared by the delivery unit tests: a DNS with fixed answers, a config."""

from __future__ import annotations

from pathlib import Path

from mailops.runtime.config import RuntimeConfig
from mailops.runtime.delivery.resolver import DnsError, MxRecord


class FakeDns:
    """Answers from dicts; a DnsError value is raised; a missing name does not exist."""

    def __init__(self, mx=None, addresses=None, txt=None, ptr=None) -> None:
        self.mx_answers = mx or {}
        self.address_answers = addresses or {}
        self.txt_answers = txt or {}
        self.ptr_answers = ptr or {}
        self.asked: list[str] = []

    async def mx(self, domain: str) -> list[MxRecord] | None:
        self.asked.append(f"MX {domain}")
        return self._answer(self.mx_answers, domain)

    async def addresses(self, host: str, rdtypes=("A", "AAAA")) -> list[str]:
        self.asked.append(f"{'/'.join(rdtypes)} {host}")
        found = self._answer(self.address_answers, host) or []
        return [a for a in found if ("AAAA" if ":" in a else "A") in rdtypes]

    async def ptr(self, address: str) -> list[str]:
        self.asked.append(f"PTR {address}")
        return self._answer(self.ptr_answers, address) or []

    async def txt(self, name: str) -> list[str] | None:
        self.asked.append(f"TXT {name}")
        return self._answer(self.txt_answers, name)

    def _answer(self, table: dict, name: str):
        if name not in table:
            raise DnsError(f"{name}: no such domain", permanent=True)
        value = table[name]
        if isinstance(value, DnsError):
            raise value
        return value


def config(tmp_path: Path, **extra) -> RuntimeConfig:
    data = {
        "hostname": "mx.here.test",
        "data_dir": str(tmp_path),
        "passwd_file": str(tmp_path / "passwd"),
        "aliases_file": str(tmp_path / "aliases"),
        "listeners": [{"service": "smtp", "address": "127.0.0.2", "port": 25}],
        "domains": {
            "here.test": {"role": "mailbox"},
            "relayed.test": {"role": "mailbox", "relay": "smart"},
            "backup.test": {"role": "backup", "primary_mx": ["mx1.backup.test"]},
        },
        "relays": {
            "smart": {"host": "smtp.relay.test", "port": 587, "tls": "starttls",
                      "username": "u", "password_file": str(tmp_path / "pw")},
        },
    }  # fmt: skip
    data.update(extra)
    return RuntimeConfig.model_validate(data)
