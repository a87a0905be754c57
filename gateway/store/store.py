"""The gateway's only door to the database: every `databases` call lives in this package."""

from __future__ import annotations

from .admin import AdminQueries
from .campaigns import CampaignQueries
from .feedback import FeedbackQueries
from .outbox import OutboxQueries
from .people import PeopleQueries
from .personal import PersonalData
from .policy import PolicyQueries
from .signup import SignupQueries


class Store(
    PeopleQueries,
    PersonalData,
    OutboxQueries,
    CampaignQueries,
    AdminQueries,
    PolicyQueries,
    SignupQueries,
    FeedbackQueries,
):
    """One object over one database; its queries are grouped by what they are about."""
