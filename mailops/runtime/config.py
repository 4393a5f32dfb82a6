"""RuntimeConfig: what `mailops serve` reads from runtime.toml.

This file is the boundary between the ops tool and the runtime (DESIGN.md §2):
mailops renders it from a spec, but a host may also be configured by hand, so
it is validated as strictly as the spec and its errors name the key at fault.
Users and aliases live in their own files (Dovecot passwd-file, Postfix
virtual map), read by `directory.py`.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailops.errors import MailopsError

Service = Literal["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"]
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s"})


class ConfigError(MailopsError):
    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Strict):
    service: Service
    address: str
    port: Annotated[int, Field(ge=1, le=65535)]

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        return ipaddress.ip_address(value).compressed


class TLSFiles(_Strict):
    cert: Path
    key: Path


class DomainConfig(_Strict):
    role: Literal["mailbox", "backup"]
    """mailbox: the mailboxes are here; backup: accept, queue and forward to primary_mx."""
    subaddress: str = "+"
    """Separator of alice+tag@; empty turns subaddressing off."""
    relay: str | None = None
    """Relay (key of [relays]) that outbound mail of this domain goes through."""
    dkim_selector: str | None = None
    dkim_key: Path | None = None
    primary_mx: list[str] = Field(default_factory=list)
    """For a backup domain: the better-priority MX hosts, best first."""


class RelayConfig(_Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password_file: Path | None = None


class QueueConfig(_Strict):
    # Minimums of one second: labs and tests shorten both to watch a bounce happen.
    lifetime: Annotated[int, Field(ge=1)] = 5 * 86400
    """Seconds a message may wait before it bounces."""
    delay_warning: Annotated[int, Field(ge=1)] = 4 * 3600
    """Seconds after which the sender is told that delivery is delayed."""


class DeliveryConfig(_Strict):
    """Outbound delivery: how many connections, how often to retry, whom to trust."""

    concurrency: Annotated[int, Field(ge=1, le=1000)] = 50
    """Deliveries in flight at once, over all destinations."""
    per_destination: Annotated[int, Field(ge=1, le=1000)] = 20
    """Deliveries in flight at once to one destination (a domain, or a relay)."""
    retry_base: Annotated[float, Field(gt=0)] = 300.0
    """Seconds before the first retry; each further retry waits twice as long..."""
    retry_max: Annotated[float, Field(gt=0)] = 3600.0
    """...up to this many seconds."""
    connect_timeout: Annotated[float, Field(gt=0)] = 30.0
    command_timeout: Annotated[float, Field(gt=0)] = 300.0
    """Seconds to wait for any one reply of the remote server (RFC 5321 §4.5.3.2)."""
    ca_file: Path | None = None
    """CA bundle for verified TLS (relays, MTA-STS); default: the system's."""
    mta_sts: bool = True
    """Fetch and obey the MTA-STS policies of recipient domains (RFC 8461)."""


class RuntimeConfig(_Strict):
    hostname: str
    """EHLO and banner name (the host's fqdn)."""
    data_dir: Path
    passwd_file: Path
    aliases_file: Path
    listeners: list[Listener]
    tls: TLSFiles | None = None
    domains: dict[str, DomainConfig] = Field(default_factory=dict)
    relays: dict[str, RelayConfig] = Field(default_factory=dict)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    resolver: list[str] | None = None
    pid_file: Path | None = None
    user: str | None = None
    """Drop to this user after binding the listeners (when started as root)."""
    max_message_size: Annotated[int, Field(ge=1024)] = 50 * 1024 * 1024
    plaintext_auth_on_loopback: bool = False
    """Allow passwords without TLS from 127.0.0.1/::1 (labs and tests only)."""
    pop3_idle_timeout: Annotated[float, Field(gt=0)] = 600.0
    """Seconds a POP3 session may stay silent (RFC 1939 asks for at least 10 minutes;
    shorter values are for tests)."""
    imap_idle_timeout: Annotated[float, Field(gt=0)] = 1800.0
    """Seconds an IMAP session may stay silent outside IDLE (RFC 3501 §5.4: at least
    30 minutes; shorter values are for tests)."""

    @field_validator("domains")
    @classmethod
    def _lowercase(cls, value: dict[str, DomainConfig]) -> dict[str, DomainConfig]:
        return {name.lower().rstrip("."): conf for name, conf in value.items()}

    def needs_tls(self) -> list[str]:
        return [x.service for x in self.listeners if x.service in IMPLICIT_TLS]


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and validate runtime.toml; ConfigError names the file and key at fault."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = RuntimeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    if config.needs_tls() and config.tls is None:
        raise ConfigError(f"{path}: listeners {', '.join(config.needs_tls())} need [tls]")
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: RuntimeConfig, base: Path) -> RuntimeConfig:
    """Relative paths in runtime.toml are relative to the file itself."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    tls = config.tls and TLSFiles(cert=fix(config.tls.cert), key=fix(config.tls.key))
    domains = {
        name: d.model_copy(update={"dkim_key": fix(d.dkim_key)})
        for name, d in config.domains.items()
    }
    relays = {
        name: r.model_copy(update={"password_file": fix(r.password_file)})
        for name, r in config.relays.items()
    }
    delivery = config.delivery.model_copy(update={"ca_file": fix(config.delivery.ca_file)})
    return config.model_copy(
        update={
            "delivery": delivery,
            "data_dir": fix(config.data_dir),
            "passwd_file": fix(config.passwd_file),
            "aliases_file": fix(config.aliases_file),
            "pid_file": fix(config.pid_file),
            "tls": tls,
            "domains": domains,
            "relays": relays,
        }
    )
