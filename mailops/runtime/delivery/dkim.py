"""DKIM: outgoing mail of served domains is signed; incoming mail is verified.

Signing uses the domain's active selector and the key file render placed on
the host (`dkim_selector`, `dkim_key` in runtime.toml). The domain is the one
of the From: header when this host serves it (what DMARC aligns with), else
the envelope sender's. A key that cannot be used is logged and the message goes
unsigned: a missing signature costs some reputation, a stuck queue costs mail.

Verification gives the `dkim=` verdicts of the `Authentication-Results` header
(RFC 8601, authres.py) of mail received on port 25: information for filters
and users, never a reason to refuse mail (yet).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailops.runtime.config import RuntimeConfig
from mailops.runtime.delivery.resolver import Dns, DnsError
from mailops.runtime.log import log
from mailops.runtime.smtp.headers import header_block

MAX_SIGNATURES = 5  # verified per message: bounds the DNS work a sender can cause
_FROM = re.compile(rb"(?im)^From[ \t]*:(.*(?:\r?\n[ \t].*)*)")
_SIGNATURE = re.compile(rb"(?im)^DKIM-Signature[ \t]*:")
SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
    b"in-reply-to", b"references", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip


@dataclass(frozen=True)
class SigningKey:
    algorithm: bytes  # dkimpy's name: rsa-sha256 | ed25519-sha256
    secret: bytes  # in the form dkimpy takes: PKCS#1 PEM, or base64 of the Ed25519 seed


def load_signing_key(path: Path) -> SigningKey:
    """Render writes PKCS#8 PEM; dkimpy wants PKCS#1 PEM (RSA) or a raw seed (Ed25519)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return SigningKey(b"ed25519-sha256", base64.b64encode(seed))
    if isinstance(key, rsa.RSAPrivateKey):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return SigningKey(b"rsa-sha256", pem)
    raise ValueError(f"{type(key).__name__} keys cannot sign DKIM")


def header_from_domain(message: bytes, among: frozenset[str] | None = None) -> str | None:
    """The domain of the single From: address. With `among`, None unless it is
    one of those: the address parser then only runs when one of them appears."""
    match = _FROM.search(header_block(message))
    if match is None:
        return None
    raw = match.group(1)
    if among is not None and not any(d.encode() in raw.lower() for d in among):
        return None
    addresses = [
        a for _, a in email.utils.getaddresses([raw.decode("utf-8", "replace")]) if "@" in a
    ]
    if len(addresses) != 1:
        return None
    domain = addresses[0].rpartition("@")[2].lower().rstrip(".")
    return domain if among is None or domain in among else None


def sign(message: bytes, domain: str, selector: str, key: SigningKey) -> bytes:
    """`message` with a DKIM-Signature header in front (relaxed/relaxed, SHA-256)."""
    present = {
        name.lower() for name in re.findall(rb"(?m)^([!-9;-~]+)[ \t]*:", header_block(message))
    }
    headers = [h for h in SIGNED_HEADERS if h in present]
    signature = dkimpy.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.secret,
        signature_algorithm=key.algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
    )
    return signature + message


class Signer:
    """Signs with each domain's key, loaded once per key file version."""

    def __init__(self) -> None:
        self._keys: dict[Path, tuple[int, SigningKey]] = {}
        self._signing: tuple[RuntimeConfig, frozenset[str]] | None = None

    def sign(self, message: bytes, sender: str, config: RuntimeConfig) -> bytes:
        domain = self._domain(message, sender, config)
        if domain is None:
            return message
        conf = config.domains[domain]
        assert conf.dkim_key is not None and conf.dkim_selector is not None
        try:
            key = self._key(conf.dkim_key)
            return sign(message, domain, conf.dkim_selector, key)
        except (OSError, ValueError, TypeError, dkimpy.DKIMException) as exc:
            log("dkim.sign_failed", domain=domain, key=conf.dkim_key, error=exc)
            return message

    def _domain(self, message: bytes, sender: str, config: RuntimeConfig) -> str | None:
        signing = self._signing_domains(config)
        if not signing:
            return None
        from_domain = header_from_domain(message, among=signing)
        if from_domain is not None:
            return from_domain
        domain = sender.rpartition("@")[2].lower()
        return domain if domain in signing else None

    def _signing_domains(self, config: RuntimeConfig) -> frozenset[str]:
        """The domains with a key, worked out once per configuration (reloads replace it)."""
        if self._signing is None or self._signing[0] is not config:
            names = frozenset(
                name
                for name, conf in config.domains.items()
                if conf.dkim_key is not None and conf.dkim_selector
            )
            self._signing = (config, names)
        return self._signing[1]

    def _key(self, path: Path) -> SigningKey:
        version = path.stat().st_mtime_ns
        cached = self._keys.get(path)
        if cached is None or cached[0] != version:
            cached = (version, load_signing_key(path))
            self._keys[path] = cached
        return cached[1]


# ---------------------------------------------------------------- verification


def signed(message: bytes) -> bool:
    """Whether the header has a DKIM-Signature (to verify)."""
    return _SIGNATURE.search(header_block(message)) is not None


async def verdicts(message: bytes, dns: Dns) -> list[str]:
    """One `dkim=<result> header.d=… header.s=… header.b=…` per signature
    (at most MAX_SIGNATURES), or just `dkim=none`."""
    if not signed(message):
        return ["dkim=none"]
    return await _verify_all(message, dns) or ["dkim=none"]


async def _verify_all(message: bytes, dns: Dns) -> list[str]:
    parsed = dkimpy.DKIM(message)
    signatures = [v for k, v in parsed.headers if k.lower() == b"dkim-signature"]
    keys: dict[bytes, bytes | None] = {}
    temporary: set[bytes] = set()
    for value in signatures[:MAX_SIGNATURES]:
        tags = _tags(value)
        name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"")
        if name in keys or not tags.get(b"s") or not tags.get(b"d"):
            continue
        try:
            texts = await dns.txt(name.decode("ascii", "replace"))
            keys[name] = texts[0].encode() if texts else None
        except DnsError as exc:
            keys[name] = None
            if not exc.permanent:
                temporary.add(name)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.rstrip(b"."))

    def verify() -> list[str]:
        out = []
        for index, value in enumerate(signatures[:MAX_SIGNATURES]):
            tags = _tags(value)
            name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"")
            if keys.get(name) is None:  # no key published, or DNS did not answer
                result = "temperror" if name in temporary else "permerror"
            else:
                result = _verify_one(parsed, index, lookup)
            props = f"header.d={_text(tags.get(b'd'))} header.s={_text(tags.get(b's'))}"
            header_b = _text(re.sub(rb"\s", b"", tags.get(b"b", b""))[:8])
            out.append(f"dkim={result} {props} header.b={header_b}")
        return out

    return await asyncio.to_thread(verify)


def _verify_one(parsed: dkimpy.DKIM, index: int, lookup) -> str:
    try:
        return "pass" if parsed.verify(idx=index, dnsfunc=lookup) else "fail"
    except dkimpy.ValidationError:
        return "fail"  # body hash mismatch, expired signature: the signature is wrong
    except dkimpy.DKIMException:
        return "permerror"  # malformed signature or key
    except Exception:  # a malformed message must never turn into a rejection
        return "permerror"


def _tags(value: bytes) -> dict[bytes, bytes]:
    tags = {}
    for part in value.split(b";"):
        key, sep, val = part.partition(b"=")
        if sep:
            tags[key.strip()] = val.strip()
    return tags


def _text(value: bytes | None) -> str:
    text = (value or b"").decode("ascii", "replace")
    return re.sub(r"[^\x21-\x7e]|[;()\"\\]", "", text) or "unknown"
