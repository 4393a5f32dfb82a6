"""Password hashes in Dovecot's `{SCHEME}hash` form: checking, hashing, verifying.

A leaf module shared by the spec (which checks hashes and hashes `password:`
secrets) and the runtime (which verifies logins); it imports neither. The
hashing libraries load on first use: checking a hash's form needs none of them.
"""

from __future__ import annotations

import functools
import re

# Scheme → the prefix the hash after it must start with.
HASH_SCHEMES: dict[str, tuple[str, ...]] = {
    "ARGON2ID": ("$argon2id$",),
    "ARGON2I": ("$argon2i$",),
    "BLF-CRYPT": ("$2a$", "$2b$", "$2y$"),
    "SHA512-CRYPT": ("$6$",),
    "SHA256-CRYPT": ("$5$",),
}

# argon2id parameters: RFC 9106's second recommended option, as Dovecot uses.
TIME_COST, MEMORY_COST, PARALLELISM = 3, 65536, 4
ARGON2_PARAMS = f"m={MEMORY_COST},t={TIME_COST},p={PARALLELISM}"  # as a hash spells them


@functools.cache
def _hasher():
    import argon2

    return argon2.PasswordHasher(
        time_cost=TIME_COST, memory_cost=MEMORY_COST, parallelism=PARALLELISM
    )


_B64 = r"[A-Za-z0-9+/]+"
_CRYPT64 = r"[./A-Za-z0-9]"
# What a whole hash of each scheme looks like, so that a truncated paste is caught
# here rather than as a user who can never log in.
HASH_SHAPES: dict[str, re.Pattern[str]] = {
    "ARGON2ID": re.compile(rf"\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\${_B64}\${_B64}"),
    "ARGON2I": re.compile(rf"\$argon2i\$v=\d+\$m=\d+,t=\d+,p=\d+\${_B64}\${_B64}"),
    "BLF-CRYPT": re.compile(rf"\$2[aby]\$\d\d\${_CRYPT64}{{53}}"),
    "SHA512-CRYPT": re.compile(rf"\$6\$(?:rounds=\d+\$)?{_CRYPT64}{{1,16}}\${_CRYPT64}{{86}}"),
    "SHA256-CRYPT": re.compile(rf"\$5\$(?:rounds=\d+\$)?{_CRYPT64}{{1,16}}\${_CRYPT64}{{43}}"),
}
HASH_FORMS = {
    "ARGON2ID": "$argon2id$v=19$m=…,t=…,p=…$salt$hash",
    "ARGON2I": "$argon2i$v=19$m=…,t=…,p=…$salt$hash",
    "BLF-CRYPT": "$2b$12$ and 53 characters",
    "SHA512-CRYPT": "$6$salt$ and 86 characters",
    "SHA256-CRYPT": "$5$salt$ and 43 characters",
}


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
    if not HASH_SHAPES[scheme.upper()].fullmatch(rest):
        raise ValueError(
            f"is not a {{{scheme}}} hash: it is cut short or damaged (expected the form "
            f"{HASH_FORMS[scheme.upper()]}); make a new one with 'mailops hash-password'"
        )
    return text


def hash_password(password: str, salt: bytes | None = None) -> str:
    """An `{ARGON2ID}` hash, in the form Dovecot's passwd-file reads. A random
    salt unless one is given (render gives a fixed per-user salt, so the same
    password renders to the same bytes and a second plan shows nothing to do)."""
    import argon2.low_level

    hasher = _hasher()
    if salt is None:
        return "{ARGON2ID}" + hasher.hash(password)
    encoded = argon2.low_level.hash_secret(
        password.encode(),
        salt,
        time_cost=hasher.time_cost,
        memory_cost=hasher.memory_cost,
        parallelism=hasher.parallelism,
        hash_len=hasher.hash_len,
        type=argon2.low_level.Type.ID,
    )
    return "{ARGON2ID}" + encoded.decode("ascii")


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches `stored` (`{SCHEME}hash` of any accepted scheme)."""
    try:
        check_hash(stored)
    except ValueError:
        return False
    scheme, _, hashed = stored[1:].partition("}")
    scheme = scheme.upper()
    import argon2

    try:
        if scheme in ("ARGON2ID", "ARGON2I"):
            return _hasher().verify(hashed, password)
        if scheme == "BLF-CRYPT":
            import bcrypt

            return bcrypt.checkpw(password.encode(), hashed.encode())
        from passlib.hash import sha256_crypt, sha512_crypt

        if scheme == "SHA512-CRYPT":
            return sha512_crypt.verify(password, hashed)
        return sha256_crypt.verify(password, hashed)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
