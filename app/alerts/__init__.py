"""Churn alerts: tables, state machine, policy, outbox and routes."""
