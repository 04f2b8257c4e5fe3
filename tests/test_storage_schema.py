"""Migrations, enums and the tables of DESIGN §4.4 on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from cjcore.errors import SchemaMismatch
from storage.database import async_url, make_engine
from storage.migrate import check_enums, upgrade
from storage.schema import metadata


def _fresh_database(pg_url: str, name: str) -> str:
    async def go() -> None:
        engine = make_engine(pg_url, pool_size=1)
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            await conn.execute(text(f"CREATE DATABASE {name}"))
        await engine.dispose()

    asyncio.run(go())
    parts = urlsplit(pg_url)
    return parts._replace(path=f"/{name}").geturl()


def test_migrations_create_exactly_the_tables_the_code_queries(pg_url):
    async def go():
        engine = make_engine(pg_url, pool_size=1)
        async with engine.connect() as conn:
            diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
            views = (await conn.execute(text("SELECT viewname FROM pg_views WHERE viewname LIKE 'cj_%'"))).all()
        await engine.dispose()
        return diffs, views

    diffs, views = asyncio.run(go())
    assert diffs == []
    assert views == [("cj_batch_health",)]


def test_migrations_are_idempotent_and_refuse_mismatched_enums(pg_url):
    url = _fresh_database(pg_url, "cj_enum_check")

    async def go():
        engine = make_engine(url, pool_size=1)
        try:
            await upgrade(engine)
            await upgrade(engine)  # a second start applies nothing and still passes the check
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TYPE cj_winner ADD VALUE 'draw'"))
            with pytest.raises(SchemaMismatch, match="cj_winner"):
                await check_enums(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/cj", "postgresql+asyncpg://u:p@db:5432/cj"),
        ("postgres://u@db/cj?sslmode=require", "postgresql+asyncpg://u@db/cj?ssl=require"),
        ("postgresql+asyncpg://postgres:@/postgres?host=/tmp/x", "postgresql+asyncpg://postgres:@/postgres?host=%2Ftmp%2Fx"),
    ],
)
def test_database_urls_a_user_would_paste(given, expected):
    assert async_url(given) == expected
