"""What a ``--redis`` URL says (no I/O): one Redis, a Sentinel set or a Cluster; anything else
refused with one sentence that never shows a password."""

from __future__ import annotations

import pytest

from trio_obs.hub.redis_url import RedisTarget, RedisUrlError, parse_redis_url, redacted


def test_one_redis() -> None:
    target = parse_redis_url("redis://:s3cret@h:7000/2")
    assert (target.mode, target.db, target.password, target.where) == (
        "single", 2, "s3cret", "redis://:***@h:7000/2"
    )  # fmt: skip
    assert parse_redis_url("redis://h").db == 0
    assert parse_redis_url("unix:///run/redis.sock?db=3").db == 3


def test_a_sentinel_set_as_centrifugo_names_it() -> None:
    url = ("redis+sentinel://u:pw@a:26379,b,[::1]:26380?sentinel_master_name=obs&db=1"
           "&sentinel_password=spw")  # fmt: skip
    target = parse_redis_url(url)
    assert target == RedisTarget(
        mode="sentinel", url=url, where=redacted(url), db=1, username="u", password="pw",
        hosts=(("a", 26379), ("b", 26379), ("::1", 26380)), master_name="obs",
        sentinel_password="spw",
    )  # fmt: skip
    assert "pw" not in target.where.replace("sentinel_password", "")


def test_a_cluster() -> None:
    target = parse_redis_url("redis+cluster://a:7000,b:7001")
    assert (target.mode, target.hosts) == ("cluster", (("a", 7000), ("b", 7001)))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379/abc", "names database 'abc': a database is a number"),
        ("redis://h:6379/0?db=1", "names two databases"),
        ("redis://a:1,b:2/0", "several hosts: use redis\\+sentinel:// .* or redis\\+cluster://"),
        ("redis+sentinel://a:1,b:2", "needs \\?sentinel_master_name=NAME"),
        ("redis+cluster://a:1/3", "a cluster has only 0"),
        ("redis://h:port/0", "does not parse: 'h:port' is not HOST:PORT"),
        ("localhost:6379", "must look like redis://HOST:PORT/DB"),
        ("http://:hunter2@h/0", "must look like"),
    ],
)
def test_a_url_that_names_nothing_usable_is_one_sentence(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message) as refused:
        parse_redis_url(url)
    assert "hunter2" not in str(refused.value)
