"""Phone numbers have one spelling: E.164, whatever way a person or an import wrote them."""

from __future__ import annotations

import pytest

from gateway import Gateway, InvalidInput
from gateway.addresses import normalize_phone


@pytest.mark.parametrize(
    "typed", ["0912 345 678", "+84912345678", "+84 912 345 678", "(091) 234-5678", "0912.345.678"]
)
def test_one_number_has_one_spelling(typed: str):
    assert normalize_phone(typed) == "+84912345678"


def test_a_number_from_another_country_keeps_its_country():
    assert normalize_phone("+33 1 42 68 53 00") == "+33142685300"


@pytest.mark.parametrize("bad", ["0901", "call me", "12ab", "+84 909 777 31415"])
def test_what_is_not_a_phone_number_is_refused_saying_how_to_write_one(bad: str):
    with pytest.raises(
        InvalidInput, match=r"is not a phone number: write it with its country code"
    ):
        normalize_phone(bad)


async def test_a_contact_added_twice_with_two_spellings_has_one_number(gw: Gateway):
    await gw.add_contact("an@example.vn", phone="0912 345 678")
    await gw.add_contact("an@example.vn", phone="+84 912 345 678")
    exported = await gw.export_contact("an@example.vn")
    assert exported["profile"]["phone"] == "+84912345678"


async def test_an_import_stores_numbers_in_one_spelling_and_reports_a_bad_one_by_line(
    gw: Gateway,
):
    report = await gw.import_csv(
        "email,name,phone\nan@example.vn,An,0912 345 678\nbinh@example.vn,Bình,gọi tôi\n"
    )
    assert report.created == 1
    assert [(line, "not a phone number" in why) for line, why in report.bad_rows] == [(3, True)]
    exported = await gw.export_contact("an@example.vn")
    assert exported["profile"]["phone"] == "+84912345678"
