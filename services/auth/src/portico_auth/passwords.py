"""Password hashing with argon2id (argon2-cffi), off the event loop.

Hashing takes tens of milliseconds of CPU and ``memory_cost_kib`` of memory, so it runs in a
worker thread, at most ``max_concurrent`` at once (a burst of logins cannot exhaust memory).

Unknown accounts: :meth:`Passwords.verify_dummy` verifies against a hash made at start-up with
the same parameters, so a login for an unknown email costs what a wrong password costs and the
two cannot be told apart by timing.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from portico_auth.config import Argon2Settings


class Passwords:
    """argon2id hashing and verification with a bounded number of threads at work."""

    def __init__(self, settings: Argon2Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_cost_kib,
            parallelism=settings.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        """The encoded argon2id hash of ``password`` (parameters and salt included)."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, encoded: str, password: str) -> bool:
        """Whether ``password`` matches ``encoded``; False for a corrupt hash too."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, encoded, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for an account that does not exist."""
        await self.verify(self._dummy, password)

    def needs_rehash(self, encoded: str) -> bool:
        """Whether ``encoded`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:  # pragma: no cover - only our own hashes are stored
            return True

    def _verify(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
