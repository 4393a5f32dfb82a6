import bcrypt
import pytest
from passlib.hash import sha256_crypt, sha512_crypt

from mailops.passwords import check_hash, hash_password, verify_password


def test_hash_password_makes_a_verifiable_argon2id_hash():
    stored = hash_password("correct horse")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsf")


def test_hashes_are_salted():
    assert hash_password("same") != hash_password("same")


@pytest.mark.parametrize(
    "stored",
    [
        "{BLF-CRYPT}" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode(),
        "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("pw"),
        "{SHA256-CRYPT}" + sha256_crypt.using(rounds=5000).hash("pw"),
        "{ARGON2I}$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA",
    ],
)
def test_every_accepted_scheme_verifies(stored):
    if stored.startswith("{ARGON2I}"):
        # a fixed vector: password "password", salt "somesalt"
        assert verify_password(stored, "password")
        assert not verify_password(stored, "pw")
        return
    assert verify_password(stored, "pw")
    assert not verify_password(stored, "pW")


def test_scheme_prefix_is_case_insensitive_in_verification():
    stored = "{sha512-crypt}" + sha512_crypt.using(rounds=5000).hash("pw")
    assert verify_password(stored, "pw")


@pytest.mark.parametrize(
    ("stored", "fragment"),
    [
        ("{PLAIN}secret", "clear text and is refused"),
        ("{CLEARTEXT}secret", "clear text and is refused"),
        ("{MD5-CRYPT}$1$abc$def", "unknown password scheme {MD5-CRYPT}"),
        ("$argon2id$v=19$m=65536,t=3,p=4$x$y", "must start with a scheme"),
        ("{ARGON2ID}$2b$12$abc", "is not a {ARGON2ID} hash"),
    ],
)
def test_refused_hashes(stored, fragment):
    with pytest.raises(ValueError) as info:
        check_hash(stored)
    assert fragment in str(info.value)
    assert not verify_password(stored, "secret")


def test_corrupt_hash_of_a_known_scheme_does_not_verify():
    assert not verify_password("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$bad$bad", "x")
    assert not verify_password("{BLF-CRYPT}$2b$12$tooshort", "x")
