"""Persistence: tables, engine and session factories, repository functions, group commit."""

# Every table module is imported with the package, so Base.metadata is complete wherever any
# part of the persistence layer is used (Alembic's env.py, the app, the tests).
from app.db import alert_tables, security_tables, tables

__all__ = ["alert_tables", "security_tables", "tables"]
