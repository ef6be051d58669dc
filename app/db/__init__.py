"""Persistence: tables, engine and session factories, repository functions, group commit."""
