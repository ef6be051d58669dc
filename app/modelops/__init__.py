"""Model inventory: which versions are loaded and their model cards."""
