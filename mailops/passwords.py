"""Password hashes in Dovecot's `{SCHEME}hash` form: checking, hashing, verifying.

A leaf module shared by the spec (which checks hashes and hashes `password:`
secrets) and the runtime (which verifies logins); it imports neither.
"""

from __future__ import annotations

import argon2
import bcrypt
from passlib.hash import sha256_crypt, sha512_crypt

# Scheme → the prefix the hash after it must start with.
HASH_SCHEMES: dict[str, tuple[str, ...]] = {
    "ARGON2ID": ("$argon2id$",),
    "ARGON2I": ("$argon2i$",),
    "BLF-CRYPT": ("$2a$", "$2b$", "$2y$"),
    "SHA512-CRYPT": ("$6$",),
    "SHA256-CRYPT": ("$5$",),
}

# argon2id parameters (RFC 9106's second recommended option, as Dovecot uses).
_HASHER = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)


def check_hash(text: str) -> str:
    """Accept a `{SCHEME}hash` of a supported scheme; refuse {PLAIN} and the rest."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string such as {{ARGON2ID}}$argon2id$…, got {text!r}")
    if not text.startswith("{") or "}" not in text:
        raise ValueError(
            "must start with a scheme such as {ARGON2ID} (make one with 'mailops hash-password')"
        )
    scheme, _, rest = text[1:].partition("}")
    if scheme.upper() in ("PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"):
        raise ValueError(
            f"scheme {{{scheme}}} stores the password in clear text and is refused; "
            "use 'mailops hash-password' for an {ARGON2ID} hash"
        )
    prefixes = HASH_SCHEMES.get(scheme.upper())
    if prefixes is None:
        raise ValueError(
            f"unknown password scheme {{{scheme}}}; accepted: "
            + ", ".join("{" + s + "}" for s in HASH_SCHEMES)
        )
    if not rest.startswith(prefixes):
        raise ValueError(f"is not a {{{scheme}}} hash: it should start with {prefixes[0]}")
    return text


def hash_password(password: str) -> str:
    """A new `{ARGON2ID}` hash, in the form Dovecot's passwd-file reads."""
    return "{ARGON2ID}" + _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches `stored` (`{SCHEME}hash` of any accepted scheme)."""
    try:
        check_hash(stored)
    except ValueError:
        return False
    scheme, _, hashed = stored[1:].partition("}")
    scheme = scheme.upper()
    try:
        if scheme in ("ARGON2ID", "ARGON2I"):
            return _HASHER.verify(hashed, password)
        if scheme == "BLF-CRYPT":
            return bcrypt.checkpw(password.encode(), hashed.encode())
        if scheme == "SHA512-CRYPT":
            return sha512_crypt.verify(password, hashed)
        return sha256_crypt.verify(password, hashed)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
