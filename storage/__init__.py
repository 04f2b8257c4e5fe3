"""The only package that speaks SQL: PostgreSQL through SQLAlchemy 2 async + asyncpg."""
