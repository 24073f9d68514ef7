"""The pure helpers behind the web pages (`ripplecast.web.views`): form checks, redirect notices,
search text and the media-URL query suffix (no HTTP, no database)."""

from __future__ import annotations

import pytest

from ripplecast.db.models import Channel, Visibility
from ripplecast.web.views import (
    NOTICES,
    PASSWORD_MAX_LENGTH,
    SEARCH_MAX_LENGTH,
    Details,
    FormError,
    channel_matches,
    details_fields,
    notice_text,
    password_field,
    query_suffix,
    search_text,
)


def test_details_fields_reads_title_description_and_visibility() -> None:
    form = {"title": "  Holiday ", "description": " At the sea\n", "visibility": "unlisted"}
    assert details_fields(form) == Details("Holiday", "At the sea", Visibility.UNLISTED)
    # Title and description may be empty or absent; visibility may not.
    assert details_fields({"visibility": "private"}) == Details("", "", Visibility.PRIVATE)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"title": "t" * 201, "visibility": "nope"}, "Title is longer than 200 characters."),
        ({"title": "x\x00", "visibility": "public"}, "Title must not contain NUL characters."),
        (
            {"description": "d" * 5001, "visibility": "nope"},
            "Description is longer than 5000 characters.",
        ),
        ({"visibility": "secret"}, "Visibility must be one of: private, public, unlisted."),
        ({}, "Visibility must be one of: private, public, unlisted."),
    ],
)
def test_details_fields_reports_the_first_bad_field(form: dict[str, str], message: str) -> None:
    with pytest.raises(FormError) as caught:
        details_fields(form)
    assert str(caught.value) == message


def test_password_field_keeps_what_was_typed() -> None:
    assert password_field({"p": "  spaced out  "}, "p", label="Password") == "  spaced out  "
    assert password_field({}, "p", label="Password") == ""
    longest = "x" * PASSWORD_MAX_LENGTH
    assert password_field({"p": longest}, "p", label="Password") == longest


@pytest.mark.parametrize(
    ("form", "required", "message"),
    [
        ({}, True, "New password is required."),
        ({"p": "x" * (PASSWORD_MAX_LENGTH + 1)}, False, "New password is longer than 1024"),
        ({"p": "a\x00b"}, False, "New password must not contain NUL characters."),
    ],
)
def test_password_field_refuses(form: dict[str, str], required: bool, message: str) -> None:
    with pytest.raises(FormError, match=message):
        password_field(form, "p", label="New password", required=required)


def test_notice_text_knows_only_its_own_messages() -> None:
    assert notice_text("channel-saved") == NOTICES["channel-saved"] == "Channel saved."
    for code in (None, "", "<script>", "Channel saved."):
        assert notice_text(code) == ""


def test_query_suffix() -> None:
    assert query_suffix("") == ""
    assert query_suffix("exp=1&sig=ab") == "?exp=1&sig=ab"


def test_search_text_drops_nul_and_blanks_and_is_bounded() -> None:
    assert search_text("  cats\x00 and dogs \n") == "cats and dogs"
    assert search_text(" \x00 ") == ""
    assert search_text("q" * 500) == "q" * SEARCH_MAX_LENGTH


def test_channel_matches_title_or_name_ignoring_case() -> None:
    channel = Channel(slug="bob-tv", title="Straße Live")
    assert channel_matches(channel, "STRASSE")  # casefold, so ß matches SS
    assert channel_matches(channel, "straße")
    assert channel_matches(channel, "LIVE")
    assert channel_matches(channel, "b-T")
    assert not channel_matches(channel, "alice")
