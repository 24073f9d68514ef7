"""Credentials at rest: passwords hashed with argon2id, random tokens stored as hashes.

- Passwords: argon2id (argon2-cffi) with parameters from settings; `verify_password` says when a
  stored hash was made with older parameters so the caller rehashes it on login.
- Session ids and API tokens: 256-bit random values shown once; only their SHA-256 is stored
  (they are high-entropy, so a fast hash is enough and lookups stay indexed).
- Stream keys: random, shown once, stored as HMAC-SHA256 under a server secret, so a stolen
  database alone does not let anyone recompute or test keys offline.

No secret value is ever logged or put in an error message here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_BYTES = 32
"""Random bytes in a session id, API token or stream key."""


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """argon2id cost parameters (OWASP's minimums are the defaults: 19 MiB, 2 passes)."""

    time_cost: int = 2
    memory_cost_kib: int = 19 * 1024
    parallelism: int = 1
    min_length: int = 8
    max_length: int = 1024


class Passwords:
    """Hashes and verifies passwords with argon2id under one policy."""

    def __init__(self, policy: PasswordPolicy | None = None) -> None:
        self.policy = policy or PasswordPolicy()
        self._hasher = PasswordHasher(
            time_cost=self.policy.time_cost,
            memory_cost=self.policy.memory_cost_kib,
            parallelism=self.policy.parallelism,
        )
        self._dummy_hash: str | None = None

    def check_strength(self, password: str) -> str | None:
        """Return why `password` is not acceptable, or None if it is."""
        if len(password) < self.policy.min_length:
            return f"password must be at least {self.policy.min_length} characters"
        if len(password) > self.policy.max_length:
            return f"password must be at most {self.policy.max_length} characters"
        return None

    def hash(self, password: str) -> str:
        """Return the argon2id hash string (salt and parameters included)."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> tuple[bool, bool]:
        """Return (matches, needs_rehash). A malformed stored hash never matches."""
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        return True, self._hasher.check_needs_rehash(stored_hash)

    def dummy_verify(self) -> None:
        """Spend the time of one verification (for unknown users: no timing oracle)."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self.verify(self._dummy_hash, "not the password")


def new_token(prefix: str = "") -> str:
    """Return a new random token (URL-safe), optionally starting with a readable prefix."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 hex of a high-entropy token (session ids, API tokens).

    Header and cookie values arrive with undecodable bytes as surrogates; they hash (to
    nothing that was ever issued) instead of raising."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def keyed_hash(secret: bytes, value: str) -> str:
    """HMAC-SHA256 hex of `value` under the server secret (stream keys)."""
    return hmac.new(secret, value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
