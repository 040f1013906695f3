"""The Reddit HTTP client against the fake Reddit over real HTTP (issue 3, points 1-3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from reddit_dagster.reddit import (
    RedditAuthError,
    RedditClient,
    RedditError,
    RedditResponseError,
    RedditUnavailable,
    SubredditUnavailable,
)
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_reddit import ABSENT, FakeReddit

pytestmark = pytest.mark.timeout(60)

SUB = "healthcare"
CLIENT_ID = "test-client-id"
SECRET = "s3cr3t-never-printed"
UA = "linux:reddit-dagster-tests:0.1 (by /u/nobody)"


def make_client(fake: FakeReddit, **options: Any) -> RedditClient:
    options.setdefault("max_attempts", 3)
    options.setdefault("backoff_base_s", 0.01)
    options.setdefault("max_wait_s", 0.2)
    options.setdefault("timeout_s", 5.0)
    return RedditClient(api_url=fake.url, www_url=fake.url, user_agent=UA, **options)


def listing_requests(fake: FakeReddit) -> list[dict[str, Any]]:
    return [entry for entry in fake.requests_log if entry["path"].startswith("/r/")]


def assert_one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and SECRET not in text


@pytest.fixture
def fake(fake_reddit_factory: Callable[..., FakeReddit]) -> FakeReddit:
    return fake_reddit_factory(seed=1)


@pytest.fixture
def oauth_fake(fake_reddit_factory: Callable[..., FakeReddit]) -> FakeReddit:
    return fake_reddit_factory(client_id=CLIENT_ID, client_secret=SECRET, seed=2)


# --- listings ---------------------------------------------------------------------------------------


def test_public_new_pages_with_after_limit_100_raw_json(fake: FakeReddit):
    fake.add_posts(SUB, 150)
    fake.add_post(SUB, title="<b>Prior auth</b> & appeals > 3 weeks")
    client = make_client(fake)
    first = client.new(SUB)
    assert len(first.posts) == 100 and first.after == first.posts[-1].fullname
    assert first.posts[0].title == "<b>Prior auth</b> & appeals > 3 weeks"  # raw_json=1: not HTML-escaped
    second = client.new(SUB, after=first.after)
    assert len(second.posts) == 51 and second.after is None
    assert {p.id for p in first.posts} | {p.id for p in second.posts} == {p["id"] for p in fake.posts(SUB)}

    log = listing_requests(fake)
    assert [entry["path"] for entry in log] == [f"/r/{SUB}/new.json"] * 2  # public endpoints: .json on www
    assert all(entry["params"]["limit"] == "100" and entry["params"]["raw_json"] == "1" for entry in log)
    assert log[1]["params"]["after"] == first.after
    assert not any(entry["auth"] for entry in log)
    assert client.requests_made == 2
    assert client.ratelimit_remaining == 998.0 and client.ratelimit_reset_s is not None


def test_user_agent_is_sent(fake: FakeReddit):
    fake.add_posts(SUB, 1)
    make_client(fake).new(SUB)
    # The fake answers a request without a User-Agent with 429 (Reddit throttles unidentified
    # clients); a 200 proves ours was sent.
    assert listing_requests(fake)[-1]["status"] == 200


def test_hot_has_stickies_first_and_limit_plus_stickies(fake: FakeReddit):
    posts = fake.add_posts(SUB, 120)
    fake.set_sticky(posts[3]["id"], True)
    fake.set_sticky(posts[7]["id"], True)
    hot = make_client(fake).hot(SUB)
    assert len(hot.posts) == 102
    assert [p.id for p in hot.posts[:2]] == [posts[3]["id"], posts[7]["id"]]
    assert all(p.stickied for p in hot.posts[:2]) and not any(p.stickied for p in hot.posts[2:])


def test_missing_optional_fields_parse_and_unparseable_children_are_skipped(fake: FakeReddit):
    bare, broken, fine = fake.add_posts(SUB, 3)
    fake.update_post(bare["id"], title=ABSENT, author=ABSENT, permalink=ABSENT, url=ABSENT, link_flair_text=ABSENT,
                     score="many", num_comments=None, over_18=ABSENT, domain=ABSENT)
    fake.update_post(broken["id"], created_utc=ABSENT)
    listing = make_client(fake).new(SUB)
    assert [p.id for p in listing.posts] == [fine["id"], bare["id"]]
    parsed = listing.posts[1]
    assert parsed.title == "" and parsed.author is None and parsed.score == 0
    assert parsed.permalink == f"/r/{SUB}/comments/{bare['id']}/"
    assert len(listing.skipped) == 1 and "created_utc" in listing.skipped[0]


def test_a_listing_that_is_not_a_listing_is_an_error_not_zero_posts(fake: FakeReddit):
    fake.add_posts(SUB, 5)
    fake.fail_next("wrong_shape", count=3)  # a t3 object, a JSON array, a Listing without a children list
    client = make_client(fake)
    for _ in range(3):
        with pytest.raises(RedditResponseError, match="Listing") as info:
            client.new(SUB)
        assert_one_line(info.value)
    assert len(client.new(SUB).posts) == 5


# --- typed errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason"),
    [("private", "private"), ("quarantined", "quarantined"), ("banned", "banned"), ("nonexistent", "nonexistent")],
)
def test_unavailable_subreddits_give_typed_errors(fake: FakeReddit, state: str, reason: str):
    fake.add_posts(SUB, 3)
    fake.set_subreddit_state(SUB, state)
    client = make_client(fake)
    with pytest.raises(SubredditUnavailable) as info:
        client.new(SUB)
    assert reason in info.value.reason and f"r/{SUB}" in str(info.value)
    assert_one_line(info.value)
    assert len(listing_requests(fake)) == 1, "refusals are not retried"
    assert not any("/subreddits/search" in entry["path"] for entry in fake.requests_log), "followed a redirect"


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("403_blocked_html", "HTTP 403 with an HTML page"),
        ("200_html", "HTTP 200 with an HTML page"),
        ("malformed_json", "malformed or truncated JSON"),
    ],
)
def test_bad_answers_give_typed_one_line_errors(fake: FakeReddit, fault: str, words: str):
    fake.add_posts(SUB, 3)
    fake.fail_next(fault)
    with pytest.raises(RedditResponseError, match=words) as info:
        make_client(fake).new(SUB)
    assert_one_line(info.value)


def test_invalid_subreddit_name_is_refused_before_any_request(fake: FakeReddit):
    with pytest.raises(RedditError, match="invalid subreddit name"):
        make_client(fake).new("../api/v1/access_token")
    assert fake.requests_log == []


# --- retries and rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["429_html", "429_json", "500", "502", "503", "504", "520", "522", "reset"])
def test_transient_failure_then_success(fake: FakeReddit, fault: str):
    fake.add_posts(SUB, 5)
    fake.retry_after_s = 0
    fake.fail_next(fault)
    client = make_client(fake)
    assert len(client.new(SUB).posts) == 5
    assert len(listing_requests(fake)) == 2


def test_429_waits_for_retry_after(fake: FakeReddit):
    fake.add_posts(SUB, 5)
    fake.retry_after_s = 1
    fake.fail_next("429_html")
    client = make_client(fake, max_wait_s=5.0, backoff_base_s=0.0)
    started = time.monotonic()
    assert len(client.new(SUB).posts) == 5
    assert time.monotonic() - started >= 1.0


def test_slow_answer_times_out_and_is_retried(fake: FakeReddit):
    fake.add_posts(SUB, 5)
    fake.slow_s = 3.0
    fake.fail_next("slow")
    client = make_client(fake, timeout_s=0.3)
    assert len(client.new(SUB).posts) == 5
    assert client.requests_made == 2


@pytest.mark.parametrize("fault", ["503", "reset", "429_json"])
def test_retries_exhausted_raise_reddit_unavailable(fake: FakeReddit, fault: str):
    fake.add_posts(SUB, 5)
    fake.retry_after_s = 0
    fake.fail_next(fault, count=10)
    client = make_client(fake, max_attempts=3)
    with pytest.raises(RedditUnavailable, match="gave up after 3 attempts") as info:
        client.new(SUB)
    assert_one_line(info.value)
    assert fake.wait_for_requests("/new", 3, timeout=5)
    assert client.requests_made == 3


def test_paces_requests_when_ahead_of_the_rate_limit_budget(fake_reddit_factory: Callable[..., FakeReddit]):
    # 10 requests per 600 s: after one request an even pace means waiting ~60 s, which the
    # client caps (at 10 s like prawcore, and at max_wait_s here).
    fake = fake_reddit_factory(ratelimit_budget=10)
    fake.add_posts(SUB, 2)
    client = make_client(fake, max_wait_s=0.4)
    started = time.monotonic()
    for _ in range(3):
        client.new(SUB)
    assert time.monotonic() - started >= 0.8  # two paced gaps
    assert client.ratelimit_remaining == 7.0


def test_exhausted_budget_waits_for_reset_then_gives_up(fake_reddit_factory: Callable[..., FakeReddit]):
    fake = fake_reddit_factory(ratelimit_budget=2)
    fake.add_posts(SUB, 2)
    client = make_client(fake, max_attempts=2, max_wait_s=0.1)
    client.new(SUB)
    client.new(SUB)
    assert client.ratelimit_remaining == 0.0
    with pytest.raises(RedditUnavailable, match="HTTP 429"):
        client.new(SUB)


# --- OAuth ------------------------------------------------------------------------------------------


def token_requests(fake: FakeReddit) -> int:
    return fake.count_requests("/api/v1/access_token")


def test_oauth_token_is_cached_and_used_on_the_api_host(oauth_fake: FakeReddit):
    oauth_fake.add_posts(SUB, 5)
    client = make_client(oauth_fake, client_id=CLIENT_ID, client_secret=SECRET)
    for _ in range(4):
        assert len(client.new(SUB).posts) == 5
    client.hot(SUB)
    assert token_requests(oauth_fake) == 1 and client.token_requests == 1
    log = listing_requests(oauth_fake)
    assert [entry["path"] for entry in log] == [f"/r/{SUB}/new"] * 4 + [f"/r/{SUB}/hot"]  # no .json on oauth
    assert all(entry["auth"] and entry["status"] == 200 for entry in log)


def test_oauth_token_is_renewed_before_it_expires(fake_reddit_factory: Callable[..., FakeReddit]):
    fake = fake_reddit_factory(client_id=CLIENT_ID, client_secret=SECRET, token_ttl_s=2)
    fake.add_posts(SUB, 5)
    client = make_client(fake, client_id=CLIENT_ID, client_secret=SECRET)
    client.new(SUB)
    time.sleep(1.9)  # past the renewal point (90% of the 2 s lifetime), still inside the lifetime
    client.new(SUB)
    assert token_requests(fake) == 2
    assert all(entry["status"] == 200 for entry in listing_requests(fake)), "waited for a 401 instead"


@pytest.mark.parametrize("how", ["401_fault", "expired"])
def test_a_401_renews_the_token_once(oauth_fake: FakeReddit, how: str):
    oauth_fake.add_posts(SUB, 5)
    client = make_client(oauth_fake, client_id=CLIENT_ID, client_secret=SECRET)
    client.new(SUB)
    if how == "401_fault":
        oauth_fake.fail_next("401_token")
    else:
        oauth_fake.expire_tokens()
    assert len(client.new(SUB).posts) == 5
    assert token_requests(oauth_fake) == 2
    assert [entry["status"] for entry in listing_requests(oauth_fake)] == [200, 401, 200]


@pytest.mark.parametrize("http_200", [False, True])
def test_wrong_credentials_give_a_clear_auth_error(fake_reddit_factory: Callable[..., FakeReddit], http_200: bool):
    fake = fake_reddit_factory(client_id=CLIENT_ID, client_secret=SECRET, wrong_credentials_http_200=http_200)
    fake.add_posts(SUB, 5)
    wrong = "wrong-" + SECRET
    client = make_client(fake, client_id=CLIENT_ID, client_secret=wrong)
    with pytest.raises(RedditAuthError, match="REDDIT_CLIENT_SECRET") as info:
        client.new(SUB)
    message = str(info.value)
    assert_one_line(info.value)
    assert wrong not in message
    assert ("HTTP 200" in message and "invalid_grant" in message) if http_200 else "HTTP 401" in message
    assert "error body" in message  # says Reddit may answer wrong credentials with HTTP 200
    assert token_requests(fake) == 1 and listing_requests(fake) == []


def test_half_configured_credentials_are_refused(fake: FakeReddit):
    with pytest.raises(RedditAuthError, match="REDDIT_CLIENT_SECRET is unset"):
        make_client(fake, client_id=CLIENT_ID).new(SUB)
    assert fake.requests_log == []


def test_from_settings_reads_hosts_user_agent_and_secret(oauth_fake: FakeReddit):
    oauth_fake.add_posts(SUB, 2)
    settings = Settings(
        reddit_api_url=oauth_fake.url + "/",
        reddit_www_url=oauth_fake.url,
        reddit_client_id=CLIENT_ID,
        reddit_client_secret=SECRET,
        reddit_user_agent=UA,
    )
    client = RedditClient.from_settings(settings)
    assert client.uses_oauth and client.user_agent == UA
    assert len(client.new(SUB).posts) == 2
