"""The gateway's own mail: its languages, the subject of each kind, the time its dates are in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .i18n import LANGUAGES

# Vietnam keeps no daylight saving time, so a fixed offset is right all year round.
TIMEZONE = timezone(timedelta(hours=7))

# One subject per kind of mail the gateway writes itself, in each language of LANGUAGES.
SUBJECTS: dict[str, dict[str, str]] = {
    "refusal": {
        "vi": "Xác nhận: bạn đã từ chối nhận thư quảng cáo",
        "en": "Confirmation: you will receive no more promotional email",
    },
    "export": {"vi": "Xác nhận tải dữ liệu của bạn", "en": "Confirm the download of your data"},
    "erase": {"vi": "Xác nhận xóa dữ liệu của bạn", "en": "Confirm the deletion of your data"},
    "preferences": {
        "vi": "Liên kết quản lý tùy chọn nhận thư",
        "en": "Your email preferences link",
    },
    "confirm": {"vi": "Xác nhận đăng ký nhận thư", "en": "Please confirm your subscription"},
    "resubscribe": {
        "vi": "Xác nhận nhận lại thư của chúng tôi",
        "en": "Please confirm you want our email again",
    },
    "policy": {
        "vi": "Thông báo thay đổi chính sách bảo mật",
        "en": "Notice of a change to our privacy policy",
    },
}


def mail_language(language: object) -> str:
    """The language to write to someone in: theirs when there is a catalog for it, else
    Vietnamese."""
    return language if isinstance(language, str) and language in LANGUAGES else "vi"


def subject(kind: str, language: object) -> str:
    return SUBJECTS[kind][mail_language(language)]


def local_time(ts: float, language: str) -> str:
    """A moment as a person reads it in their language, in Vietnam's time."""
    moment = datetime.fromtimestamp(ts, TIMEZONE)
    if language == "vi":
        return moment.strftime("%H:%M:%S ngày %d/%m/%Y (giờ Việt Nam, UTC+7)")
    return moment.strftime("%d %B %Y at %H:%M:%S (Vietnam time, UTC+7)")
