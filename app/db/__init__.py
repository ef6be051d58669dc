"""Persistence infrastructure: the declarative base, engines and sessions, migrations.

Domain packages own their tables; ``app.tables`` gathers them for Alembic and the tests.
"""
