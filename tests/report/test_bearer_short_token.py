"""A Bearer credential is masked whatever its length (an outside tester: `Bearer Sekr9tI`
was shown while `Bearer Sekr9tIabc` was masked); the scheme's word stays, and so do the
words of an API's own text about Bearer tokens."""

from __future__ import annotations

import pytest

from devicelab.report._common import mask_secrets


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer Sekr9tI", "Sekr9tI"),
        ("Bearer x1", "x1"),
        ("bearer abcDef", "abcDef"),
        ("sent Bearer a.b then", "a.b"),
    ],
)
def test_a_short_bearer_credential_is_masked_keeping_the_scheme(text: str, secret: str) -> None:
    masked = mask_secrets(text)
    assert secret not in masked, masked
    assert masked == text.replace(secret, "***")


@pytest.mark.parametrize(
    "said",
    [
        "This endpoint requires a Bearer token",
        "the API requires a Bearer token.",
        "send a Bearer token-",
        "Bearer Token expected",
        "use Bearer AUTH",
    ],
)
def test_words_after_bearer_are_left_alone(said: str) -> None:
    assert mask_secrets(said) == said
