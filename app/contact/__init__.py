"""Contact policy: whether the bank may contact a customer now, and which rule says no."""
