"""Password logins for the dashboard where no OIDC provider is configured: PBKDF2-SHA256 hashes
from the standard library, compared in constant time. Pure: no Streamlit, no environment.

A hash reads ``pbkdf2_sha256$<iterations>$<salt hex>$<digest hex>``; `icu dashboard
--hash-password` makes one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

ALGORITHM: Final = "pbkdf2_sha256"
ITERATIONS: Final = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
MIN_ITERATIONS: Final = 100_000
USER_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AuthError(ValueError):
    """A malformed user list or hash (the message says which entry, never the secret)."""


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    if not password:
        raise AuthError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise AuthError(f"not a {ALGORITHM} hash (make one with `icu dashboard --hash-password`)")
    try:
        iterations, salt, digest = int(parts[1]), bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
    except ValueError:
        raise AuthError("malformed hash: iterations, salt or digest unreadable") from None
    if iterations < MIN_ITERATIONS or len(salt) < 8 or len(digest) != 32:
        raise AuthError(f"weak or malformed hash: at least {MIN_ITERATIONS} iterations and an 8-byte salt")
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; a malformed hash never matches."""
    try:
        iterations, salt, digest = _parse_hash(encoded)
    except AuthError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(candidate, digest)


def parse_users(text: str) -> dict[str, str]:
    """``name:hash,name:hash`` -> {name: hash}; raises :class:`AuthError` naming the bad entry."""
    users: dict[str, str] = {}
    for number, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        name, sep, encoded = entry.partition(":")
        if not sep or not USER_PATTERN.match(name):
            raise AuthError(f"entry {number}: expected name:hash with a plain user name")
        try:
            _parse_hash(encoded)
        except AuthError as exc:
            raise AuthError(f"entry {number} ({name}): {exc}") from None
        if name in users:
            raise AuthError(f"entry {number}: user {name} listed twice")
        users[name] = encoded
    return users


def check_login(users: dict[str, str], name: str, password: str) -> bool:
    """True when ``name`` is a known user and ``password`` is theirs. An unknown name costs the
    same hashing as a known one, so response time does not reveal which names exist."""
    encoded = users.get(name.strip())
    if encoded is None:
        hashlib.pbkdf2_hmac("sha256", password.encode(), b"\0" * 16, ITERATIONS)
        return False
    return verify_password(password, encoded)
