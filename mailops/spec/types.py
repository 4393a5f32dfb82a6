"""Small value types of the spec: ranges, addresses, sizes, names.

Each validator raises ValueError with a message written for the person editing
the spec ("must be 1–65535, got 70000"); the loader puts the key's name in
front of a message that starts with "must".
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

from mailops.spec import names


def _range(lo: int, hi: int):
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo}–{hi}, got {value}")
        return value

    return check


def IntRange(lo: int, hi: int, description: str | None = None):
    return Annotated[
        StrictInt,
        AfterValidator(_range(lo, hi)),
        Field(json_schema_extra={"minimum": lo, "maximum": hi}, description=description),
    ]


Port = IntRange(1, 65535)
Priority = IntRange(0, 65535)
TTL = IntRange(1, 2_147_483_647)


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ValueError(f"must be an IPv4 address like 203.0.113.10, got {value!r}") from None


def _ipv6(value: Any) -> str:
    try:
        return ipaddress.IPv6Address(str(value)).compressed
    except ValueError:
        raise ValueError(f"must be an IPv6 address like 2001:db8::10, got {value!r}") from None


def _ip(value: Any) -> str:
    try:
        return ipaddress.ip_address(str(value)).compressed
    except ValueError:
        raise ValueError(f"must be an IP address like 0.0.0.0 or ::, got {value!r}") from None


def _resolver(value: Any) -> str:
    """`IP`, `IP:PORT` or `[IPv6]:PORT`, normalised to `IP:PORT` / `[IPv6]:PORT`."""
    text = str(value)
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)|([^\[\]]+)", text)
    if match:
        host = match.group(1) or match.group(3) or match.group(5)
        port = int(match.group(2) or match.group(4) or 53)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and 1 <= port <= 65535:
            return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    raise ValueError(
        f"must be a DNS server as IP or IP:PORT (like 127.0.0.1:53 or [::1]:53), got {text!r}"
    )


IPv4 = Annotated[str, BeforeValidator(_ipv4)]
IPv6 = Annotated[str, BeforeValidator(_ipv6)]
IPAddr = Annotated[str, BeforeValidator(_ip)]
ResolverAddress = Annotated[str, BeforeValidator(_resolver)]


def _str(what: str):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be {what}, got {value!r}")
        return value

    return check


def _domain(value: Any) -> str:
    return names.domain(_str("a domain name like example.org")(value))


def _hostname(value: Any) -> str:
    return names.domain(_str("a host name like mx1.example.org")(value), "host name")


def _dns_name(value: Any) -> str:
    return names.dns_name(_str("a DNS name like _spf.example.com")(value))


def _record_name(value: Any) -> str:
    what = "a name like www, '@' or _dmarc (quote null, true or numbers)"
    return names.record_name(_str(what)(value))


def _local_part(value: Any) -> str:
    return names.local_part(_str("a local part like alice")(value))


def _host_id(value: Any) -> str:
    text = _str("a name of lowercase letters, digits and '-'")(value)
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", text):
        raise ValueError(
            "must be lowercase letters, digits and '-' (not at the start or end), "
            "at most 63 characters"
        )
    return text


def _alias_target(value: Any) -> str:
    """A bare local part (a user or alias of the same domain) or a full address."""
    text = _str("a local part like alice or an address like carol@example.net")(value)
    return names.address(text) if "@" in text else names.local_part(text)


DomainName = Annotated[str, BeforeValidator(_domain), Field(description="A domain name.")]
Hostname = Annotated[str, BeforeValidator(_hostname)]
DnsName = Annotated[str, BeforeValidator(_dns_name)]
RecordName = Annotated[str, BeforeValidator(_record_name)]
LocalPart = Annotated[str, BeforeValidator(_local_part)]
Id = Annotated[str, BeforeValidator(_host_id)]
AliasTarget = Annotated[str, BeforeValidator(_alias_target)]

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip


def parse_size(value: Any) -> int:
    """`2GiB`, `500MB`, `1.5G` (bare K/M/G/T are binary, as in Dovecot) or bytes."""
    if isinstance(value, bool):
        raise ValueError(f"must be a size like 2GiB or 500MB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(
            f"must be a size like 2GiB, 500MB or 1073741824 (units B, KiB, MiB, GiB, TiB, "
            f"KB, MB, GB, TB), got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[unit])


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(json_schema_extra={"type": ["integer", "string"]}),
]
