"""Settings of the migration runner (env prefix ``MIGRATE_``; ``DATABASE_URL`` also accepted)."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_migrations_dir() -> Path:
    """The ``migrations/`` folder of a source checkout (the Job image sets ``MIGRATE_DIR``)."""
    return Path(__file__).resolve().parents[2]


class MigrateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATE_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MIGRATE_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL DSN of the database to migrate (asyncpg / libpq URL).",
    )
    dir: Path = Field(
        default_factory=default_migrations_dir,
        description="Folder holding one sub-folder of NNNN_name.sql files per service.",
    )
    lock_timeout_s: float = Field(
        default=60.0, gt=0, description="How long to wait for another runner's advisory lock."
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)


@functools.cache
def get_settings() -> MigrateSettings:
    return MigrateSettings()
