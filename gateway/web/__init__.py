"""The web side: preference center, one-click unsubscribe, admin API (Starlette)."""
