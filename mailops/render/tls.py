"""Self-signed certificates for `tls.self_signed: true` (labs and tests).

Made once and kept beside the spec (`keys/tls/<host>.crt` and `.key`), so a
second render gives the same bytes and clients that pinned it keep working.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mailops import inputs
from mailops.files import write_atomic

VALIDITY = dt.timedelta(days=825)


def self_signed_paths(key_dir: Path, host_id: str) -> tuple[Path, Path]:
    return key_dir / "tls" / f"{host_id}.crt", key_dir / "tls" / f"{host_id}.key"


def ensure_self_signed(
    key_dir: Path, host_id: str, fqdn: str, addresses: list[str]
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for the host, made on first use."""
    cert_path, key_path = self_signed_paths(key_dir, host_id)
    inputs.note_file(cert_path)
    inputs.note_file(key_path)
    if cert_path.exists() and key_path.exists():
        return cert_path.read_bytes(), key_path.read_bytes()
    return _make_self_signed(cert_path, key_path, fqdn, addresses)


def _make_self_signed(
    cert_path: Path, key_path: Path, fqdn: str, addresses: list[str]
) -> tuple[bytes, bytes]:
    import ipaddress  # only here: most renders find the certificate made already

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(fqdn)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)
    return cert_pem, key_pem
