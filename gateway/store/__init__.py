"""Storage: tables, queries and migrations; the only package that talks to `databases`."""

from .store import Contact, OutboxItem, Standing, Store, Suppression, Topic

__all__ = ["Contact", "OutboxItem", "Standing", "Store", "Suppression", "Topic"]
