"""Casework: staff, complaints with first-responder ownership, deadlines and escalation."""
