"""The operator console: server-rendered pages for staff at /console (issue 19)."""
