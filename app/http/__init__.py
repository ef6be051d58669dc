"""The HTTP edge: the app factory, injected dependencies, health endpoints."""
