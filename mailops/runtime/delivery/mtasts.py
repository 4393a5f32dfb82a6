"""MTA-STS (RFC 8461): a domain's promise that its MX hosts take verified TLS.

The TXT record `_mta-sts.<domain>` says a policy exists and names its version
(`id`); the policy itself comes over HTTPS from
`https://mta-sts.<domain>/.well-known/mta-sts.txt`, certificate verified, no
redirects. Policies are cached (memory and disk) for their `max_age` and
fetched again only when the TXT id changes; when DNS or HTTPS fail, the cached
policy stays in force — that is what makes the scheme resist an attacker who
blocks the lookups. Under `enforce` delivery goes only to listed MX hosts with
verified TLS, or waits; `testing` and `none` change nothing here.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailops.runtime.delivery.resolver import Dns, DnsError
from mailops.runtime.durable import ensure_dirs, write_durable
from mailops.runtime.log import log

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3 suggests at most 64 KiB
MAX_AGE_LIMIT = 31_557_600  # one year (RFC 8461 §3.2)
FETCH_TIMEOUT = 60.0  # RFC 8461 §3.3: "senders SHOULD ... timeout of at least 60 seconds"
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class PolicyError(Exception):
    """The policy could not be fetched or is not valid."""


@dataclass(frozen=True)
class Policy:
    mode: Literal["enforce", "testing", "none"]
    mx: tuple[str, ...]
    max_age: int

    def matches(self, host: str) -> bool:
        """RFC 8461 §4.1: exact names, or `*.example.org` for exactly one more label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, _, rest = host.partition(".")
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_txt(texts: list[str] | None) -> str | None:
    """The policy id of the `_mta-sts` TXT record; None unless exactly one is valid."""
    ids = []
    for text in texts or ():
        fields = [f.strip() for f in text.split(";")]
        if fields[0] != "v=STSv1":
            continue
        values = dict(f.partition("=")[::2] for f in fields[1:] if "=" in f)
        if _ID.match(values.get("id", "")):
            ids.append(values["id"])
    return ids[0] if len(ids) == 1 else None


def parse_policy(text: str) -> Policy:
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("not an STSv1 policy")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"unknown mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age missing or not a number") from None
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("no mx patterns")
    return Policy(mode, mx, max(0, min(max_age, MAX_AGE_LIMIT)))  # type: ignore[arg-type]


@dataclass
class _Cached:
    id: str
    policy: Policy
    expires: float


class MtaSts:
    """Policy lookups with a cache; `fetch` is replaceable (tests, other transports)."""

    def __init__(
        self,
        dns: Dns,
        cache_dir: Path,
        tls: ssl.SSLContext,
        *,
        port: int = 443,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dns = dns
        self.cache_dir = cache_dir
        self.tls = tls
        self.port = port
        self.clock = clock
        self._memory: dict[str, _Cached] = {}

    async def policy(self, domain: str) -> Policy | None:
        cached = self._cached(domain)
        try:
            policy_id = parse_txt(await self.dns.txt(f"_mta-sts.{domain}"))
        except DnsError:
            return cached.policy if cached else None
        if policy_id is None or (cached and cached.id == policy_id):
            return cached.policy if cached else None
        try:
            policy = parse_policy(await self.fetch(domain))
        except (PolicyError, DnsError, OSError, ValueError, TimeoutError) as exc:
            log("mta_sts.fetch_failed", domain=domain, error=exc)
            return cached.policy if cached else None
        self._store(domain, _Cached(policy_id, policy, self.clock() + policy.max_age))
        log("mta_sts.policy", domain=domain, id=policy_id, mode=policy.mode)
        return policy

    async def fetch(self, domain: str) -> str:
        """GET https://mta-sts.<domain>/.well-known/mta-sts.txt: 200 and text/plain only."""
        host = f"mta-sts.{domain}"
        addresses = await self.dns.addresses(host)
        if not addresses:
            raise PolicyError(f"{host} has no address")
        async with asyncio.timeout(FETCH_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                addresses[0], self.port, ssl=self.tls, server_hostname=host
            )
            try:
                writer.write(
                    f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                    "Connection: close\r\nUser-Agent: mailops\r\n\r\n".encode()
                )
                raw = await reader.read(MAX_POLICY_BYTES + 16 * 1024)
                while len(raw) <= MAX_POLICY_BYTES + 16 * 1024:
                    more = await reader.read(16 * 1024)
                    if not more:
                        break
                    raw += more
            finally:
                writer.close()
        return _http_body(raw)

    # ------------------------------------------------------------ cache

    def _cached(self, domain: str) -> _Cached | None:
        entry = self._memory.get(domain) or self._load(domain)
        if entry is None or entry.expires < self.clock():
            return None
        self._memory[domain] = entry
        return entry

    def _path(self, domain: str) -> Path:
        return self.cache_dir / f"{domain}.json"

    def _load(self, domain: str) -> _Cached | None:
        try:
            data = json.loads(self._path(domain).read_text())
            policy = Policy(data["mode"], tuple(data["mx"]), int(data["max_age"]))
            return _Cached(str(data["id"]), policy, float(data["expires"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, domain: str, entry: _Cached) -> None:
        self._memory[domain] = entry
        data = {
            "id": entry.id,
            "mode": entry.policy.mode,
            "mx": list(entry.policy.mx),
            "max_age": entry.policy.max_age,
            "expires": entry.expires,
        }
        try:
            ensure_dirs(self.cache_dir)
            write_durable(self._path(domain), json.dumps(data).encode(), tmp_dir=self.cache_dir)
        except OSError as exc:
            log("mta_sts.cache_not_saved", domain=domain, error=exc.strerror or exc)


def _http_body(raw: bytes) -> str:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise PolicyError("no complete HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        # RFC 8461 §3.3: redirects are not followed; anything but 200 is no policy.
        raise PolicyError(f"HTTP status {' '.join(status[1:]) or 'missing'}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if not headers.get("content-type", "").lower().startswith("text/plain"):
        raise PolicyError("policy is not text/plain")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("policy larger than 64 KiB")
    return body.decode("utf-8", "replace")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            raise PolicyError("truncated chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return out
        out += rest[:size]
        data = rest[size + 2 :]
