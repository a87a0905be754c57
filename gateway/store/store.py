"""The gateway's only door to the database: every `databases` call lives in this package."""

from __future__ import annotations

from .admin import AdminQueries
from .campaigns import CampaignQueries
from .consent import ConsentQueries
from .feedback import FeedbackQueries
from .outbox import OutboxQueries
from .people import PeopleQueries
from .personal import PersonalData
from .privacy import PrivacyQueries
from .signup import SignupQueries
from .suppressions import SuppressionQueries


class Store(
    PeopleQueries,
    ConsentQueries,
    SuppressionQueries,
    PersonalData,
    OutboxQueries,
    CampaignQueries,
    AdminQueries,
    PrivacyQueries,
    SignupQueries,
    FeedbackQueries,
):
    """One object over one database; its queries are grouped by what they are about."""
