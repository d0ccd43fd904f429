"""Password hashing and session tokens: bcrypt for passwords, random tokens stored as SHA-256.

bcrypt is deliberately slow (~200 ms), so it runs on its own small executor
(``PasswordHasher``): a flood of logins queues there and never takes the threads that
every other endpoint's blocking work runs on. A login for an unknown user checks the
password against a dummy hash, so both answers take the same time and usernames cannot
be told apart by timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor

import bcrypt

# Cost 12 matches bcrypt.gensalt()'s default, so the dummy check costs what a real one does.
_BCRYPT_ROUNDS = 12


def hash_password(password: str) -> str:
    """bcrypt hash (bcrypt reads at most 72 bytes, so longer passwords are pre-hashed)."""
    return bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt(_BCRYPT_ROUNDS)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_bcrypt_input(password), password_hash.encode())
    except ValueError:
        return False


def _bcrypt_input(password: str) -> bytes:
    raw = password.encode()
    return raw if len(raw) <= 72 else hashlib.sha256(raw).hexdigest().encode()


class PasswordHasher:
    """bcrypt on a dedicated executor of ``threads`` threads, with a dummy hash for unknown users."""

    def __init__(self, threads: int):
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="bcrypt"
        )
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check ``password``; ``password_hash=None`` (no such user) costs the same and is False."""
        loop = asyncio.get_running_loop()
        target = password_hash or self._dummy_hash
        matched = await loop.run_in_executor(self._executor, verify_password, password, target)
        return matched and password_hash is not None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, hash_password, password)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def new_token() -> str:
    """A URL-safe secret handed to the client once."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the DB keeps of a token: a stolen DB does not yield usable tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two secrets (CSRF tokens, the metrics token)."""
    return secrets.compare_digest(left.encode(), right.encode())


def generate_password() -> str:
    return secrets.token_urlsafe(12)


MIN_PASSWORD_LENGTH = 8


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be set, or None (the one rule for the API and the CLI)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must have at least {MIN_PASSWORD_LENGTH} characters"
    return None


EXTERNAL_HASH_PREFIX = "!external:"


def is_external_hash(password_hash: str) -> bool:
    """Accounts of LDAP/OIDC users hold this marker instead of a hash: no local password works."""
    return password_hash.startswith(EXTERNAL_HASH_PREFIX)
