"""``backend load``'s options checked together without the CLI: LoadRequest.prepare raises
BadInput naming the clash before anything is made or asked (no server at these DSNs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend_checks.load import LoadRequest
from devicelab.errors import BadInput

DSN = "host=127.0.0.1 port=1 dbname=f13_none"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"closed": True, "rate": 5.0}, "--rate does not apply"),
        ({"rate": float("inf")}, "bad --rate"),
        ({"processes": 0}, "bad --processes"),
        ({"url": "http://127.0.0.1:9/rest/v1/"}, "/rest/v1 endpoint"),
        ({"url": "http://127.0.0.1:9"}, "needs the API's anon key"),
        ({"url": "http://127.0.0.1:9", "anon_key": "k", "dsn": DSN, "accounts": 2}, "--accounts"),
        ({"reference": True, "url": "http://127.0.0.1:9"}, "--reference serves its own API"),
        ({"imports": [Path("x.json")], "users": [5]}, "--import judges runs that are over"),
        ({"imports": [Path("x.json")], "dsn": DSN}, "--import judges runs that are over"),
    ],
)
def test_contradictory_options_are_refused_in_one_step(given: dict[str, object], says: str) -> None:
    with pytest.raises(BadInput) as raised:
        LoadRequest.model_validate(given).prepare()
    assert says in raised.value.message


def test_supabase_url_from_the_environment_yields_to_another_target() -> None:
    # From the environment, a bad URL is dropped for --import; typed, it is refused.
    bad = "http://127.0.0.1:9/rest/v1/"
    imports = [Path("x.json")]
    job = LoadRequest(url=bad, url_from_env=True, imports=imports).prepare()
    assert job.request.url is None and job.options.users == [100, 1000]
    with pytest.raises(BadInput, match="--import judges"):
        LoadRequest(url=bad, imports=imports).prepare()
    with pytest.raises(BadInput, match="/rest/v1 endpoint"):
        LoadRequest(url=bad, url_from_env=True).prepare()


def test_the_secrets_are_not_in_the_repr() -> None:
    request = LoadRequest(dsn="postgresql://u:dsnsecret@h/db", anon_key="keysecret",
                          test_password="pwsecret")  # fmt: skip
    assert not any(s in repr(request) for s in ("dsnsecret", "keysecret", "pwsecret"))
