"""REDIS_URL=redis+sentinel://... (issue 22.1): what parses, what is refused with a clear
line, and the password never in an error, a repr or a log line."""

from __future__ import annotations

import pytest

from domain.errors import ConfigurationError
from domain.sentinel_url import SentinelTarget, parse_sentinel_url
from workers.settings import load_settings

SECRET = "pa:ss@w/rd"  # every character a URL parser might trip on
QUOTED = "pa%3Ass%40w%2Frd"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster",
            SentinelTarget((("10.0.0.1", 26379), ("10.0.0.2", 26380)), "mymaster", 0),
        ),
        (
            f"redis+sentinel://:{QUOTED}@s1:5000,s2,[::1]:5001/svc/3",
            SentinelTarget((("s1", 5000), ("s2", 26379), ("::1", 5001)), "svc", 3, None, SECRET),
        ),
        (
            "redis+sentinel://app:pw@s1:1/svc/",  # a trailing slash, an ACL user
            SentinelTarget((("s1", 1),), "svc", 0, "app", "pw"),
        ),
    ],
)
def test_good_urls_parse(url: str, expected: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"redis+sentinel://:{QUOTED}@s1:26379", "names no service"),
        (f"redis+sentinel://:{QUOTED}@s1:26379/", "names no service"),
        (f"redis+sentinel://:{QUOTED}@/svc", "names no sentinel"),
        (f"redis+sentinel://:{QUOTED}@s1:26379,,s2/svc", "sentinel address 2 is empty"),
        (f"redis+sentinel://:{QUOTED}@s1:port/svc", "port that is not a number"),
        (f"redis+sentinel://:{QUOTED}@s1:70000/svc", "port that is not a number"),
        (f"redis+sentinel://:{QUOTED}@[::1:5/svc", "unclosed [IPv6]"),
        (f"redis+sentinel://:{QUOTED}@s1/svc/zero", "must be a number"),
        (f"redis+sentinel://:{QUOTED}@s1/svc/0/extra", "/service_name or /service_name/db"),
        (f"redis+sentinel://:{QUOTED}@s1/svc?ssl=true", "no query"),
        (f"redis+sentinel://{QUOTED}@s1/svc", "credentials must be"),
    ],
)
def test_bad_urls_say_what_is_wrong_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_sentinel_url(url)
    assert says in str(caught.value)
    assert SECRET not in str(caught.value) and QUOTED not in str(caught.value)
    # Through the settings: one line naming REDIS_URL, exit 2, the password nowhere.
    with pytest.raises(ConfigurationError) as config:
        load_settings(redis_url=url)
    assert "REDIS_URL" in str(config.value).upper() and says in str(config.value)
    assert SECRET not in str(config.value) and QUOTED not in str(config.value)


def test_the_settings_take_a_sentinel_url_for_redis_and_the_broker() -> None:
    url = f"redis+sentinel://:{QUOTED}@s1:26379,s2:26379/svc/2"
    settings = load_settings(redis_url=url, broker_url=url)
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == url
    assert settings.broker_url is not None


def test_a_parsed_url_never_shows_its_password() -> None:
    target = parse_sentinel_url(f"redis+sentinel://:{QUOTED}@s1:26379/svc")
    assert target.password == SECRET
    assert SECRET not in repr(target) and SECRET not in target.where()
    assert target.where() == "s1:26379/svc/0"


def test_log_lines_hide_the_password_of_a_url_without_a_user() -> None:
    # redis://:password@ and redis+sentinel://:password@ (no user before the colon).
    from domain.redaction import redact

    for url in (
        "redis+sentinel://:s3cret-pw@s1:26379,s2:26379/svc/0",
        "redis://:s3cret-pw@redis:6379/0",
        "redis+sentinel://app:s3cret-pw@s1/svc",
    ):
        assert "s3cret-pw" not in redact(f"could not reach {url} (timeout)")
