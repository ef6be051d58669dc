"""Delivering alert notifications by e-mail and webhook from the outbox."""
