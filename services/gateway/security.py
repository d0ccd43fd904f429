"""Password hashing and session tokens: bcrypt for passwords, random tokens stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

import bcrypt


def hash_password(password: str) -> str:
    """bcrypt hash (bcrypt reads at most 72 bytes, so longer passwords are pre-hashed)."""
    return bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_bcrypt_input(password), password_hash.encode())
    except ValueError:
        return False


def _bcrypt_input(password: str) -> bytes:
    raw = password.encode()
    return raw if len(raw) <= 72 else hashlib.sha256(raw).hexdigest().encode()


def new_token() -> str:
    """A URL-safe secret handed to the client once."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the DB keeps of a token: a stolen DB does not yield usable tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(12)
