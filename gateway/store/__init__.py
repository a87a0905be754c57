"""Storage: tables, queries and migrations; the only package that talks to `databases`."""

from ..records import Contact, OutboxItem, Standing, Suppression, Topic
from .store import Store

__all__ = ["Contact", "OutboxItem", "Standing", "Store", "Suppression", "Topic"]
