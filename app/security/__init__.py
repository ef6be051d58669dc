"""Who may call what: credentials, scopes, tenants, limits, idempotency, pseudonyms, audit.

Nothing here runs at import time; `app.http.app.create_app` builds a `Guard` from the settings and
installs `SecurityMiddleware`. Routers only declare the scope they need (`app.http.deps`).
"""
