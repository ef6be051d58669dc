"""The customer record: the behaviour trail taken in from core banking, read per customer."""
