"""Apply migrations at start and refuse to run against a schema whose enums differ from the code's."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cjcore.errors import SchemaMismatch
from storage.schema import ENUMS

_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x636A5F6D6967  # "cj_mig": one migrator at a time, however many processes start together


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    command.upgrade(_alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    await check_enums(engine)


async def check_enums(engine: AsyncEngine) -> None:
    """Raise SchemaMismatch when a database enum's labels differ from the Python enum's values."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
                    "WHERE t.typname = ANY(:names) ORDER BY t.typname, e.enumsortorder"
                ),
                {"names": list(ENUMS)},
            )
        ).all()
    found: dict[str, list[str]] = {}
    for name, label in rows:
        found.setdefault(name, []).append(label)
    for name, py in ENUMS.items():
        expected = [m.value for m in py]
        if found.get(name) != expected:
            raise SchemaMismatch(
                f"database enum {name} is {found.get(name)}, the code expects {expected}; "
                "run the migrations of this version or use a matching database"
            )
