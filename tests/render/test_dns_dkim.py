"""DKIM keys: made once with mode 0600, never regenerated, wrong types refused."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailops.errors import MailopsError
from mailops.render import dkim
from mailops.render.dns import Record
from mailops.spec.model import Spec


def p_tag(text: str) -> bytes:
    tags = dict(part.strip().split("=", 1) for part in text.split(";"))
    return base64.b64decode(tags["p"])


def test_missing_key_is_generated_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "dkim" / "example.org.s1.key"
    key, created = dkim.ensure_key(path, "rsa-2048")
    assert created
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8 PEM
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp files left


def test_existing_key_is_never_regenerated(tmp_path):
    path = tmp_path / "example.org.s1.key"
    dkim.ensure_key(path, "ed25519")
    before = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    key, created = dkim.ensure_key(path, "ed25519")
    assert not created
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stamp
    assert (
        key.private_bytes_raw()
        == serialization.load_pem_private_key(before, None).private_bytes_raw()
    )


def test_create_key_file_does_not_replace_an_existing_file(tmp_path):
    path = tmp_path / "k.key"
    path.write_bytes(b"someone else's key")
    assert dkim.create_key_file(path, dkim.generate_key("ed25519")) is False
    assert path.read_bytes() == b"someone else's key"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


@pytest.mark.parametrize(
    ("existing", "wanted", "found"),
    [("ed25519", "rsa-2048", "ed25519"), ("rsa-1024", "rsa-2048", "rsa-1024")],
)
def test_key_of_another_type_is_an_error_and_left_alone(tmp_path, existing, wanted, found):
    path = tmp_path / "example.org.s1.key"
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if existing == "ed25519"
        else rsa.generate_private_key(65537, 1024)
    )
    path.write_bytes(dkim.private_pem(key))
    before = path.read_bytes()
    with pytest.raises(dkim.DkimKeyError, match=f"is {found} but the selector asks for {wanted}"):
        dkim.ensure_key(path, wanted)
    assert issubclass(dkim.DkimKeyError, MailopsError)
    assert path.read_bytes() == before


def test_unreadable_key_content_is_an_error(tmp_path):
    path = tmp_path / "example.org.s1.key"
    path.write_text("not a key\n")
    with pytest.raises(dkim.DkimKeyError, match="is not a PEM private key"):
        dkim.ensure_key(path, "rsa-2048")
    assert path.read_text() == "not a key\n"


def test_encrypted_key_is_an_error(tmp_path):
    path = tmp_path / "example.org.s1.key"
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(dkim.DkimKeyError, match="is encrypted"):
        dkim.ensure_key(path, "ed25519")


def test_rsa_record_publishes_the_subject_public_key_info():
    key = rsa.generate_private_key(65537, 2048)
    text = dkim.dkim_record_text(key)
    assert text.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(p_tag(text))
    assert public.public_numbers() == key.public_key().public_numbers()


def test_ed25519_record_publishes_the_raw_32_byte_key():
    key = ed25519.Ed25519PrivateKey.generate()
    text = dkim.dkim_record_text(key)
    assert text.startswith("v=DKIM1; k=ed25519; p=")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert p_tag(text) == raw and len(raw) == 32


def test_rsa_4096_record_splits_into_three_strings(tmp_path):
    key, _ = dkim.ensure_key(tmp_path / "big.key", "rsa-4096")
    assert key.key_size == 4096
    text = dkim.dkim_record_text(key)
    record = Record.txt("s._domainkey.example.org", text, 3600, "dkim")
    assert [len(s) for s in record.strings[:-1]] == [255, 255]
    assert 0 < len(record.strings[-1]) <= 255
    assert record.text == text


def spec_with_selectors() -> Spec:
    return Spec.model_validate(
        {
            "version": 1,
            "hosts": {
                "mx1": {
                    "fqdn": "mx1.example.org",
                    "ipv4": "192.0.2.1",
                    "tls": {"self_signed": True},
                }
            },
            "domains": {
                "example.org": {
                    "mailbox_host": "mx1",
                    "mx": [{"host": "mx1", "priority": 10}],
                    "dkim": {
                        "selectors": [
                            {"name": "a", "algorithm": "ed25519"},
                            {"name": "b", "algorithm": "ed25519"},
                        ]
                    },
                }
            },
        }
    )


def test_ensure_keys_notes_each_key_it_makes_and_only_then(tmp_path):
    spec = spec_with_selectors()
    keys, notes = dkim.ensure_keys(spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.org.a.key", "example.org.b.key"]
    assert [k.created for k in keys.values()] == [True, True]
    assert [n.severity for n in notes] == ["note", "note"]
    assert f"made DKIM key {tmp_path / 'example.org.a.key'} (ed25519)" in notes[0].message
    again, notes = dkim.ensure_keys(spec, tmp_path)
    assert notes == []
    assert [k.record for k in again.values()] == [k.record for k in keys.values()]
    assert dkim.dkim_records(again) == {
        ("example.org", "a"): keys[("example.org", "a")].record,
        ("example.org", "b"): keys[("example.org", "b")].record,
    }


def test_ensure_keys_warns_about_a_key_others_can_read(tmp_path):
    spec = spec_with_selectors()
    dkim.ensure_keys(spec, tmp_path)
    os.chmod(tmp_path / "example.org.b.key", 0o644)
    _, notes = dkim.ensure_keys(spec, tmp_path)
    assert [(n.severity, "mode 0644" in n.message) for n in notes] == [("warning", True)]
    assert stat.S_IMODE((tmp_path / "example.org.b.key").stat().st_mode) == 0o644  # not "fixed"


def test_key_dir_is_beside_the_spec(tmp_path):
    assert dkim.key_dir_for(tmp_path) == tmp_path / "keys" / "dkim"
    assert dkim.key_path(tmp_path, "example.org", "s1") == tmp_path / "example.org.s1.key"
