"""The gateway's only door to the database: every `databases` call lives in this package."""

from __future__ import annotations

from .admin import AdminQueries
from .campaigns import CampaignQueries
from .consent import ConsentQueries
from .console_campaigns import ConsoleCampaignQueries
from .console_people import ConsolePeopleQueries
from .feedback import FeedbackQueries
from .listings import ListingQueries
from .outbox import OutboxQueries
from .people import PeopleQueries
from .personal import PersonalData
from .privacy import PrivacyQueries
from .signup import SignupQueries
from .staff import StaffQueries
from .stats import StatsQueries
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
    ConsolePeopleQueries,
    StaffQueries,
    ConsoleCampaignQueries,
    ListingQueries,
    StatsQueries,
):
    """One object over one database; its queries are grouped by what they are about."""
