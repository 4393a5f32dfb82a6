"""DKIM keys: made once, kept beside the spec, never silently replaced.

A DKIM key is state, not configuration: the public half sits in DNS with its
own TTL, and mail already signed with it stays verifiable only while that
record matches. So a key is generated only when its file is missing (and that
is said), and a key file that does not match its selector's algorithm is an
error — changing algorithm means a new selector, never a new key under an old
name. Files are PEM (PKCS#8), mode 0600, at
`<spec dir>/keys/dkim/<domain>.<selector>.key` — the name the runtime also
uses under /etc/mailops/dkim/.

The I/O is here; turning a key into its TXT record (`dkim_record_text`) is pure.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailops.errors import MailopsError

if TYPE_CHECKING:  # render.dns (and dnspython) is only needed when a note is made
    from mailops.render.dns import Notice
    from mailops.spec.model import Spec

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

KEY_SUBDIR = Path("keys") / "dkim"
RSA_BITS = {"rsa-2048": 2048, "rsa-4096": 4096}


class DkimKeyError(MailopsError):
    """A key file exists but cannot be used as the spec asks."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    path: Path
    record: str
    """The selector's TXT text: `v=DKIM1; k=…; p=…`."""
    created: bool
    """True when this run generated the key."""


def key_dir_for(spec_dir: Path) -> Path:
    return spec_dir / KEY_SUBDIR


def key_path(key_dir: Path, domain: str, selector: str) -> Path:
    return key_dir / f"{domain}.{selector}.key"


# ---------------------------------------------------------------- pure


def algorithm_of(key: object) -> str:
    """The spec's name for a key's type: rsa-2048, rsa-4096, ed25519 (or what it is)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return type(key).__name__


def dkim_record_text(key: PrivateKey) -> str:
    """The DKIM key record (RFC 6376 §3.6.1): RSA publishes the DER
    SubjectPublicKeyInfo, which every verifier reads; Ed25519 publishes the bare
    32-byte public key (RFC 8463 §4.2)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def generate_key(algorithm: str) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[algorithm])


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# ---------------------------------------------------------------- files


def load_key(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read DKIM key {path}: {exc.strerror}") from None
    try:
        # Skipping the RSA consistency check is safe here: the key is our own
        # file and we only derive its public half. The check costs tens of
        # milliseconds per key, which a spec with hundreds of selectors feels.
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        raise DkimKeyError(
            f"DKIM key {path} is encrypted; mailops needs it unencrypted (PEM, mode 0600)"
        ) from None
    except ValueError:
        raise DkimKeyError(
            f"DKIM key {path} is not a PEM private key; move it away to have mailops make a "
            "new one (and publish the new record before signing with it)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimKeyError(
            f"DKIM key {path} is a {algorithm_of(key)} key; DKIM uses RSA or Ed25519"
        )
    return key


def create_key_file(path: Path, key: PrivateKey) -> bool:
    """Write `key` to `path` unless a file is there already; True if written.

    The file appears complete or not at all (temp file, fsync, hard link), and
    the link fails rather than replace a key that another run made meanwhile."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DkimKeyError(f"cannot write DKIM key {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp made it 0600
            handle.write(private_pem(key))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    except OSError as exc:
        raise DkimKeyError(f"cannot write DKIM key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def ensure_key(path: Path, algorithm: str) -> tuple[PrivateKey, bool]:
    """The key at `path`, generated first if missing; (key, created)."""
    if not path.exists() and create_key_file(path, generate_key(algorithm)):
        return load_key(path), True
    key = load_key(path)
    found = algorithm_of(key)
    if found != algorithm:
        raise DkimKeyError(
            f"DKIM key {path} is {found} but the selector asks for {algorithm}; mailops never "
            "replaces a key: to change algorithm add a new selector (keep the old one "
            "published until mail signed with it has been read), or move the file away"
        )
    return key, False


def ensure_keys(spec: Spec, key_dir: Path) -> tuple[dict[tuple[str, str], DkimKey], list[Notice]]:
    """Every selector's key, made where missing; with a note for each one made
    and a warning for each key file that others can read."""
    keys: dict[tuple[str, str], DkimKey] = {}
    notes: list[Notice] = []
    for domain in sorted(spec.domains):
        for selector in spec.domains[domain].dkim.selectors:
            path = key_path(key_dir, domain, selector.name)
            key, created = ensure_key(path, selector.algorithm)
            record = dkim_record_text(key)
            keys[(domain, selector.name)] = DkimKey(
                domain, selector.name, selector.algorithm, path, record, created
            )
            if created:
                notes.append(
                    _notice(
                        "note",
                        f"made DKIM key {path} ({selector.algorithm}) for selector "
                        f"{selector.name} of {domain}; publish its record before mail is "
                        "signed with it",
                    )
                )
            elif stat.S_IMODE(path.stat().st_mode) & 0o077:
                mode = stat.S_IMODE(path.stat().st_mode)
                notes.append(
                    _notice(
                        "warning",
                        f"DKIM key {path} has mode {mode:04o}: others can read it (chmod 600 "
                        f"{path})",
                    )
                )
    return keys, notes


def _notice(severity: str, text: str) -> Notice:
    from mailops.render.dns import Notice

    return Notice(severity, text)


def dkim_records(keys: dict[tuple[str, str], DkimKey]) -> dict[tuple[str, str], str]:
    """The (domain, selector) → TXT text mapping that dns.build_dns takes."""
    return {ident: key.record for ident, key in keys.items()}
