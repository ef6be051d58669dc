"""Campaigns with control groups: target, hold out, launch under the contact policy, report."""
