"""The Valkey URL forms (portico_common.valkey): what a Sentinel URL means, and bad ones refused
at start-up with the variable's name. Following a failover is proven by the drill
(tests/reliability/test_valkey_failover.py), against real Sentinels."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portico_common.service_settings import ValkeySettings
from portico_common.valkey import (
    InvalidValkeyUrl,
    SentinelTarget,
    SentinelValkey,
    client,
    parse_sentinel_url,
)


def test_a_sentinel_url_names_sentinels_primary_db_and_both_credentials() -> None:
    url = (
        "valkey+sentinel://gate%40way:p%3Ass@s0:26379,s1:26380,s2/portico/3"
        "?sentinel_password=t0p&sentinel_username=watcher"
    )
    assert parse_sentinel_url(url) == SentinelTarget(
        sentinels=(("s0", 26379), ("s1", 26380), ("s2", 26379)),
        primary="portico",
        db=3,
        username="gate@way",
        password="p:ss",
        sentinel_username="watcher",
        sentinel_password="t0p",
    )


def test_a_sentinel_url_without_credentials_or_db() -> None:
    target = parse_sentinel_url("valkey+sentinel://127.0.0.1:5000/main")
    assert (target.sentinels, target.primary, target.db) == ((("127.0.0.1", 5000),), "main", 0)
    assert target.username is target.password is target.sentinel_password is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("valkey+sentinel:///portico", "names no Sentinel"),
        ("valkey+sentinel://s0:26379", "the path must be"),
        ("valkey+sentinel://s0:26379/portico/x", "the database must be a number"),
        ("valkey+sentinel://s0:99999/portico", "not a Sentinel address"),
        ("valkey+sentinel://s0/portico?sentinel_pasword=x", "unknown option"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(InvalidValkeyUrl, match=says):
        parse_sentinel_url(url)
    with pytest.raises(ValidationError, match=says):
        ValkeySettings(url=url)  # type: ignore[arg-type]


async def test_the_factory_builds_a_sentinel_client_only_for_the_sentinel_form() -> None:
    plain = client("redis://127.0.0.1:1/0", socket_timeout_s=0.1, connect_timeout_s=0.1)
    ha = client(
        "valkey+sentinel://u:p@127.0.0.1:1,127.0.0.1:2/portico",
        socket_timeout_s=0.1,
        connect_timeout_s=0.1,
    )
    try:
        assert not isinstance(plain, SentinelValkey)
        assert isinstance(ha, SentinelValkey)
        assert len(ha.sentinel_clients) == 2
        kwargs = ha.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", "p", 0)
        assert kwargs["retry"] is not None
    finally:
        await plain.aclose()
        await ha.aclose()
