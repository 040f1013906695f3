"""The fake Reddit itself, exercised over real HTTP with requests."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from reddit_dagster.simulators.fake_reddit import ABSENT, FAULT_KINDS, FakeReddit

pytestmark = pytest.mark.timeout(60)

UA = {"User-Agent": "linux:reddit_dagster.tests:v0.1 (by /u/tester)"}
SUB = "healthcare"


def get(fake: FakeReddit, path: str, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
    return requests.get(fake.url + path, params=params, headers=headers or UA, timeout=10)


def listing(fake: FakeReddit, path: str = f"/r/{SUB}/new.json", **params: Any) -> dict[str, Any]:
    response = get(fake, path, raw_json=1, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "Listing"
    return body["data"]


def ids(data: dict[str, Any]) -> list[str]:
    return [child["data"]["id"] for child in data["children"]]


def token(fake: FakeReddit, client_id: str, secret: str) -> requests.Response:
    return requests.post(
        fake.url + "/api/v1/access_token",
        auth=(client_id, secret),
        data={"grant_type": "client_credentials"},
        headers=UA,
        timeout=10,
    )


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --- pagination -------------------------------------------------------------------------------------


def test_after_limit_count_walk_and_exactly_full_last_page(fake_reddit: FakeReddit) -> None:
    posts = fake_reddit.add_posts(SUB, 6)
    newest_first = [p["id"] for p in reversed(posts)]
    assert [p["id"] for p in fake_reddit.posts(SUB)] == newest_first
    created = [p["created_utc"] for p in posts]
    assert created == sorted(set(created)) and all(c == int(c) for c in created)
    assert [int(p["id"], 36) for p in posts] == sorted(int(p["id"], 36) for p in posts)

    page1 = listing(fake_reddit, limit=3)
    assert ids(page1) == newest_first[:3]
    assert page1["after"] == f"t3_{newest_first[2]}"
    assert page1["before"] is None  # count absent
    assert page1["dist"] == 3

    page2 = listing(fake_reddit, limit=3, after=page1["after"], count=3)
    assert ids(page2) == newest_first[3:]
    assert page2["before"] == f"t3_{newest_first[3]}"  # count > 0 fills before
    assert page2["after"] == f"t3_{newest_first[5]}"  # full page: after set although nothing follows

    page3 = listing(fake_reddit, limit=3, after=page2["after"], count=6)
    assert page3["children"] == [] and page3["after"] is None and page3["before"] is None
    assert page3["dist"] == 0

    short = listing(fake_reddit, limit=4, after=page1["after"])
    assert ids(short) == newest_first[3:] and short["after"] is None  # not full: after null


def test_limit_default_clamp_and_non_integer(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(SUB, 120)
    assert len(listing(fake_reddit)["children"]) == 25
    for raw, expected in [("0", 1), ("-5", 1), ("1", 1), ("100", 100), ("500", 100), ("abc", 25), ("1.5", 25)]:
        assert len(listing(fake_reddit, limit=raw)["children"]) == expected, raw


def test_before_returns_items_adjacent_to_the_anchor(fake_reddit: FakeReddit) -> None:
    p = [post["id"] for post in fake_reddit.add_posts(SUB, 10)]  # p[0] oldest
    data = listing(fake_reddit, before=f"t3_{p[2]}", limit=3)
    assert ids(data) == [p[5], p[4], p[3]]  # closest to the anchor, newest first
    assert data["before"] is None and data["after"] is None  # count absent

    data = listing(fake_reddit, before=f"t3_{p[2]}", limit=3, count=10)
    assert data["after"] == f"t3_{p[3]}" and data["before"] == f"t3_{p[5]}"

    data = listing(fake_reddit, before=f"t3_{p[7]}", limit=5, count=10)
    assert ids(data) == [p[9], p[8]]
    assert data["before"] is None  # page not full: nothing newer
    assert data["after"] == f"t3_{p[8]}"

    # before wins over after, as in r2
    assert ids(listing(fake_reddit, before=f"t3_{p[2]}", after=f"t3_{p[8]}", limit=1)) == [p[3]]


def test_anchor_not_in_listing_gives_empty_page(fake_reddit: FakeReddit) -> None:
    p = [post["id"] for post in fake_reddit.add_posts(SUB, 6)]
    other = fake_reddit.add_post("medicine")["id"]
    fake_reddit.delete_post(p[3])
    fake_reddit.remove_post(p[1])
    for anchor in (p[3], p[1], other):
        for key in ("after", "before"):
            data = listing(fake_reddit, **{key: f"t3_{anchor}", "limit": 2})
            assert data["children"] == [] and data["after"] is None, (anchor, key)
    assert p[3] not in ids(listing(fake_reddit)) and p[1] not in ids(listing(fake_reddit))

    # a fullname naming no post at all is ignored by r2: the first page is served
    assert ids(listing(fake_reddit, after="t3_zzzzzzz", limit=2)) == [p[5], p[4]]

    fake_reddit.approve_post(p[1])  # back at its original time
    assert ids(listing(fake_reddit)) == [p[5], p[4], p[2], p[1], p[0]]
    assert ids(listing(fake_reddit, after=f"t3_{p[2]}")) == [p[1], p[0]]
    with pytest.raises(ValueError, match="deleted"):
        fake_reddit.approve_post(p[3])


def test_late_post_lands_at_its_time_position(fake_reddit: FakeReddit) -> None:
    p = [post["id"] for post in fake_reddit.add_posts(SUB, 3)]
    first_created = fake_reddit.posts(SUB)[-1]["created_utc"]
    late = fake_reddit.add_post(SUB, created_utc=first_created - 100, title="approved late")
    assert int(late["id"], 36) > int(p[2], 36)  # newer id, older time
    assert ids(listing(fake_reddit)) == [p[2], p[1], p[0], late["id"]]


def test_only_the_newest_listing_cap_posts_are_reachable(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    fake = fake_reddit_factory(listing_cap=10)
    p = [post["id"] for post in fake.add_posts(SUB, 15)]
    seen: list[str] = []
    after = None
    for _ in range(10):
        data = listing(fake, limit=4, after=after) if after else listing(fake, limit=4)
        seen += ids(data)
        after = data["after"]
        if after is None:
            break
    assert seen == list(reversed(p))[:10]
    assert listing(fake, after=f"t3_{p[2]}")["children"] == []  # beyond the cap
    assert len(fake.posts(SUB)) == 15


def test_ever_listed_counts_only_new_and_hot_answers(fake_reddit: FakeReddit) -> None:
    p = [post["id"] for post in fake_reddit.add_posts(SUB, 5)]
    get(fake_reddit, "/api/info", id=f"t3_{p[0]}")
    assert fake_reddit.ever_listed == set()
    listing(fake_reddit, limit=2)
    assert fake_reddit.ever_listed == {p[4], p[3]}
    listing(fake_reddit, f"/r/{SUB}/hot", limit=5)
    assert fake_reddit.ever_listed == set(p)


# --- hot ----------------------------------------------------------------------------------------


def test_hot_puts_stickies_first_and_adds_them_to_the_first_page(fake_reddit: FakeReddit) -> None:
    scores = [50, 10, 40, 30, 20, 60]
    p = [fake_reddit.add_post(SUB, score=s)["id"] for s in scores]
    fake_reddit.set_sticky(p[1], True)
    fake_reddit.set_sticky(p[4], True)
    data = listing(fake_reddit, f"/r/{SUB}/hot", limit=2)
    assert ids(data) == [p[1], p[4], p[5], p[0]]  # limit + 2 stickies
    assert [c["data"]["stickied"] for c in data["children"]] == [True, True, False, False]
    assert data["after"] == f"t3_{p[0]}"
    nxt = listing(fake_reddit, f"/r/{SUB}/hot", limit=2, after=data["after"])
    assert ids(nxt) == [p[2], p[3]]  # no extra on later pages
    for alias in (f"/r/{SUB}.json", f"/r/{SUB}", f"/r/{SUB}/best", f"/r/{SUB}/hot.json"):
        assert ids(listing(fake_reddit, alias, limit=2)) == ids(data), alias
    # stickies stay at their creation position in /new
    assert ids(listing(fake_reddit)) == list(reversed(p))
    # a third sticky unsticks the oldest one
    fake_reddit.set_sticky(p[2], True)
    data = listing(fake_reddit, f"/r/{SUB}/hot", limit=1)
    assert ids(data)[:2] == [p[4], p[2]] and len(data["children"]) == 3
    fake_reddit.set_sticky(p[4], False)
    assert len(listing(fake_reddit, f"/r/{SUB}/hot", limit=1)["children"]) == 2


# --- post content -----------------------------------------------------------------------------------


def test_escaping_without_raw_json(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_post(SUB, title="Costs & benefits <script>alert(1)</script>", selftext="a < b & c > d")
    escaped = get(fake_reddit, f"/r/{SUB}/new.json").json()["data"]["children"][0]["data"]
    assert escaped["title"] == "Costs &amp; benefits &lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped["selftext"] == "a &lt; b &amp; c &gt; d"
    assert escaped["selftext_html"].startswith('&lt;!-- SC_OFF --&gt;&lt;div class="md"&gt;')
    raw = get(fake_reddit, f"/r/{SUB}/new.json", raw_json=1).json()["data"]["children"][0]["data"]
    assert raw["title"] == "Costs & benefits <script>alert(1)</script>"
    assert raw["selftext"] == "a < b & c > d"
    assert raw["selftext_html"].startswith('<!-- SC_OFF --><div class="md"><p>a &lt; b &amp; c &gt; d</p>')


def test_listing_and_post_shape(fake_reddit: FakeReddit) -> None:
    self_post = fake_reddit.add_post(SUB, title="Prior auth: what has your clinic seen?", link_flair_text=None)
    link = fake_reddit.add_post(SUB, url="https://kff.org/report?a=1&b=2", title="KFF report")
    gone = fake_reddit.add_post(SUB, author="[deleted]")
    hostile = fake_reddit.add_post(SUB, title="nul\x00 emoji \U0001f600 rtl \u202e", selftext="x" * 100_000)
    sparse = fake_reddit.add_post(SUB, link_flair_text=ABSENT, num_comments=ABSENT)
    response = get(fake_reddit, f"/r/{SUB}/new", raw_json=1)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["kind", "data"]
    assert set(body["data"]) == {"after", "before", "dist", "modhash", "geo_filter", "children"}
    assert body["data"]["modhash"] == ""  # anonymous
    by_id = {c["data"]["id"]: c["data"] for c in body["data"]["children"]}
    assert all(c["kind"] == "t3" for c in body["data"]["children"])

    s = by_id[self_post["id"]]
    assert s["name"] == f"t3_{s['id']}" and s["subreddit"] == SUB and s["subreddit_name_prefixed"] == f"r/{SUB}"
    assert s["permalink"] == f"/r/{SUB}/comments/{s['id']}/prior_auth_what_has_your_clinic_seen/"
    assert s["url"] == "https://www.reddit.com" + s["permalink"]
    assert s["is_self"] is True and s["domain"] == f"self.{SUB}" and s["link_flair_text"] is None
    assert isinstance(s["created_utc"], float) and s["created"] == s["created_utc"]
    assert s["author_fullname"].startswith("t2_") and s["stickied"] is False and s["over_18"] is False
    for key in ("score", "num_comments", "ups", "upvote_ratio", "thumbnail", "edited", "removed_by_category"):
        assert key in s

    ln = by_id[link["id"]]
    assert ln["is_self"] is False and ln["domain"] == "kff.org" and ln["selftext"] == ""
    assert ln["url"] == "https://kff.org/report?a=1&b=2" and ln["selftext_html"] is None
    assert by_id[gone["id"]]["author"] == "[deleted]" and "author_fullname" not in by_id[gone["id"]]
    assert by_id[hostile["id"]]["title"] == "nul\x00 emoji \U0001f600 rtl \u202e"
    assert len(by_id[hostile["id"]]["selftext"]) == 100_000
    assert "link_flair_text" not in by_id[sparse["id"]] and "num_comments" not in by_id[sparse["id"]]

    fake_reddit.delete_post(self_post["id"])
    fake_reddit.remove_post(link["id"])
    info = get(fake_reddit, "/api/info", id=f"t3_{self_post['id']},t3_{link['id']}", raw_json=1).json()
    deleted, removed = (c["data"] for c in info["data"]["children"])
    assert deleted["author"] == "[deleted]" and deleted["selftext"] == "[deleted]"
    assert "author_fullname" not in deleted
    assert removed["removed_by_category"] == "moderator"
    by_path = get(fake_reddit, f"/by_id/t3_{self_post['id']}").json()
    assert by_path["data"]["children"][0]["data"]["author"] == "[deleted]"


# --- rate limits, user agent ------------------------------------------------------------------------


def test_rate_limit_headers_exhaustion_and_window_reset(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    fake = fake_reddit_factory(ratelimit_budget=3, ratelimit_window_s=1)
    fake.add_posts(SUB, 2)
    seen = []
    for _ in range(3):
        r = get(fake, f"/r/{SUB}/new")
        assert r.status_code == 200
        seen.append((r.headers["x-ratelimit-used"], r.headers["x-ratelimit-remaining"]))
        assert int(r.headers["x-ratelimit-reset"]) in (0, 1)
    assert seen == [("1", "2.0"), ("2", "1.0"), ("3", "0.0")]
    over = get(fake, f"/r/{SUB}/new")
    assert over.status_code == 429
    assert over.json() == {"message": "Too Many Requests", "error": 429}
    assert over.headers["x-ratelimit-remaining"] == "0.0"
    assert wait_until(lambda: get(fake, f"/r/{SUB}/new").status_code == 200, timeout=5)
    assert fake.count_requests("/new") >= 5


def test_user_agent_is_required(fake_reddit: FakeReddit) -> None:
    r = requests.get(fake_reddit.url + f"/r/{SUB}/new", headers={"User-Agent": ""}, timeout=10)
    assert r.status_code == 429 and r.json()["error"] == 429
    conn = http.client.HTTPConnection("127.0.0.1", int(fake_reddit.url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", f"/r/{SUB}/new")  # http.client sends no User-Agent
    assert conn.getresponse().status == 429
    conn.close()
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 200


# --- OAuth ------------------------------------------------------------------------------------------


def test_token_flow(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    fake = fake_reddit_factory(client_id="cid", client_secret="s3cret-value", token_ttl_s=3600)
    fake.add_posts(SUB, 2)
    unauth = get(fake, f"/r/{SUB}/new")
    assert unauth.status_code == 401 and unauth.json() == {"message": "Unauthorized", "error": 401}
    assert "invalid_token" in unauth.headers["www-authenticate"]

    r = token(fake, "cid", "s3cret-value")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600 and body["scope"] == "*"
    bearer = {**UA, "Authorization": f"bearer {body['access_token']}"}
    ok = get(fake, f"/r/{SUB}/new", headers=bearer, raw_json=1)
    assert ok.status_code == 200 and len(ok.json()["data"]["children"]) == 2
    assert ok.json()["data"]["modhash"] is None  # as recorded on oauth.reddit.com
    assert get(fake, f"/r/{SUB}/new", headers={**UA, "Authorization": "bearer nope"}).status_code == 401

    wrong = token(fake, "cid", "wrong")
    assert wrong.status_code == 401 and wrong.json() == {"message": "Unauthorized", "error": 401}
    fake.wrong_credentials_http_200 = True
    wrong = token(fake, "cid", "wrong")
    assert wrong.status_code == 200 and wrong.json() == {"error": "invalid_grant"}
    bad_grant = requests.post(
        fake.url + "/api/v1/access_token", auth=("cid", "s3cret-value"), data={"grant_type": "password"}, headers=UA
    )
    assert bad_grant.status_code == 200 and bad_grant.json() == {"error": "unsupported_grant_type"}

    fake.expire_tokens()
    assert get(fake, f"/r/{SUB}/new", headers=bearer).status_code == 401
    log_text = repr(fake.requests_log)
    assert "s3cret-value" not in log_text and body["access_token"] not in log_text
    assert fake.requests_log[-1]["auth"] is True and fake.count_requests("access_token") == 4


def test_token_expires_after_its_lifetime(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    fake = fake_reddit_factory(client_id="cid", client_secret="sec", token_ttl_s=1)
    body = token(fake, "cid", "sec").json()
    assert body["expires_in"] == 1
    bearer = {**UA, "Authorization": f"bearer {body['access_token']}"}
    assert get(fake, f"/r/{SUB}/new", headers=bearer).status_code == 200
    assert wait_until(lambda: get(fake, f"/r/{SUB}/new", headers=bearer).status_code == 401, timeout=5)


def test_public_mode_needs_no_token(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(SUB, 1)
    assert get(fake_reddit, f"/r/{SUB}/new.json").status_code == 200
    assert token(fake_reddit, "any", "thing").status_code == 200


# --- faults -----------------------------------------------------------------------------------------


def _is_listing(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("kind") == "Listing"
        and isinstance(body.get("data"), dict)
        and isinstance(body["data"].get("children"), list)
    )


FAULT_CHECKS: dict[str, Callable[[requests.Response], bool]] = {
    "429_html": lambda r: (
        r.status_code == 429
        and r.headers["Content-Type"].startswith("text/html")
        and "whoa there, pardner!" in r.text
        and r.headers["retry-after"] == "1"
        and "x-ratelimit-used" not in r.headers
    ),
    "429_json": lambda r: (
        r.status_code == 429
        and r.json() == {"message": "Too Many Requests", "error": 429}
        and "x-ratelimit-used" in r.headers
    ),
    "500": lambda r: r.status_code == 500 and r.json() == {"message": "Internal Server Error", "error": 500},
    "502": lambda r: r.status_code == 502 and r.content == b"",
    "503": lambda r: r.status_code == 503 and r.content == b"",
    "504": lambda r: r.status_code == 504 and r.content == b"",
    "520": lambda r: r.status_code == 520 and r.content == b"",
    "522": lambda r: r.status_code == 522 and r.content == b"",
    "403_blocked_html": lambda r: (
        r.status_code == 403 and r.headers["Content-Type"].startswith("text/html") and "blocked" in r.text
    ),
    "200_html": lambda r: r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"),
    "empty_page": lambda r: (
        r.status_code == 200
        and _is_listing(r.json())
        and r.json()["data"]["children"] == []
        and r.json()["data"]["after"] is None
    ),
    "401_token": lambda r: r.status_code == 401 and r.json()["error"] == 401,
}


@pytest.mark.parametrize("kind", sorted(FAULT_CHECKS))
def test_fault_kind_answers_as_claimed_once(fake_reddit: FakeReddit, kind: str) -> None:
    fake_reddit.add_posts(SUB, 3)
    fake_reddit.fail_next(kind)
    faulty = get(fake_reddit, f"/r/{SUB}/new")
    assert FAULT_CHECKS[kind](faulty), (faulty.status_code, faulty.headers, faulty.text[:200])
    assert fake_reddit.ever_listed == set()
    normal = get(fake_reddit, f"/r/{SUB}/new")
    assert normal.status_code == 200 and len(normal.json()["data"]["children"]) == 3


def test_body_faults_are_not_listings(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(SUB, 3)
    fake_reddit.fail_next("malformed_json")
    fake_reddit.fail_next("200_html")
    for _ in range(2):
        r = get(fake_reddit, f"/r/{SUB}/new")
        assert r.status_code == 200
        with pytest.raises(requests.JSONDecodeError):
            r.json()
    fake_reddit.fail_next("wrong_shape", count=3)
    shapes = [get(fake_reddit, f"/r/{SUB}/new").json() for _ in range(3)]
    assert not any(_is_listing(s) for s in shapes)
    assert {"kind": "t3", "data": {}} in shapes and [] in shapes
    assert _is_listing(get(fake_reddit, f"/r/{SUB}/new").json())


def test_reset_closes_without_answer(fake_reddit: FakeReddit) -> None:
    fake_reddit.fail_next("reset", count=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            get(fake_reddit, f"/r/{SUB}/new")
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 200
    assert [e["status"] for e in fake_reddit.requests_log] == [0, 0, 200]


def test_slow_times_out_the_client_and_stop_does_not_wait(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(SUB, 1)
    fake_reddit.slow_s = 0.5
    fake_reddit.fail_next("slow")
    with pytest.raises(requests.ReadTimeout):
        requests.get(fake_reddit.url + f"/r/{SUB}/new", headers=UA, timeout=0.1)
    fake_reddit.fail_next("slow")
    started = time.monotonic()
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 200  # answers after the delay
    assert time.monotonic() - started >= 0.45

    fake_reddit.slow_s = 30
    fake_reddit.fail_next("slow")
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(get(fake_reddit, f"/r/{SUB}/new").status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert wait_until(lambda: fake_reddit.pending_faults == 0, timeout=5)  # the request is being held
    started = time.monotonic()
    fake_reddit.stop()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)


def test_fail_next_targets_paths_and_skips_the_token_endpoint(fake_reddit: FakeReddit) -> None:
    fake_reddit.fail_next("500", path_contains="after=")
    fake_reddit.fail_next("503")
    assert token(fake_reddit, "a", "b").status_code == 200  # None never matches the token endpoint
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 503
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 200
    assert get(fake_reddit, f"/r/{SUB}/new", after="t3_x").status_code == 500
    fake_reddit.fail_next("429_json", path_contains="access_token")
    assert token(fake_reddit, "a", "b").status_code == 429
    with pytest.raises(ValueError, match="unknown fault"):
        fake_reddit.fail_next("teapot")


def test_fault_rate_is_deterministic_for_a_seed(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    runs = []
    for _ in range(2):
        fake = fake_reddit_factory(seed=7)
        fake.set_fault_rate(0.5, ["500", "503"])
        runs.append([get(fake, f"/r/{SUB}/new").status_code for _ in range(30)])
        assert get(fake, "/api/info", id="t3_1").status_code == 200  # only listings get random faults
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500, 503}


def test_every_fault_kind_is_covered() -> None:
    assert set(FAULT_CHECKS) | {"malformed_json", "wrong_shape", "reset", "slow"} == FAULT_KINDS


# --- subreddit states -------------------------------------------------------------------------------


def test_subreddit_states(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts("medicine", 1)
    expected = {
        "private": (403, {"reason": "private", "message": "Forbidden", "error": 403}),
        "banned": (404, {"reason": "banned", "message": "Not Found", "error": 404}),
    }
    for state, (status, body) in expected.items():
        fake_reddit.set_subreddit_state(SUB, state)
        r = get(fake_reddit, f"/r/{SUB}/new")
        assert r.status_code == status and r.json() == body
        assert "x-ratelimit-used" in r.headers
    fake_reddit.set_subreddit_state(SUB, "quarantined")
    r = get(fake_reddit, f"/r/{SUB}/new")
    assert r.status_code == 403 and r.json()["reason"] == "quarantined"

    fake_reddit.set_subreddit_state(SUB, "nonexistent")
    r = requests.get(fake_reddit.url + f"/r/{SUB}/new.json", headers=UA, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == f"{fake_reddit.url}/subreddits/search.json?q={SUB}"
    followed = get(fake_reddit, f"/r/{SUB}/new")
    assert followed.url.startswith(f"{fake_reddit.url}/subreddits/search?q=")
    assert followed.json()["kind"] == "Listing"
    assert all(c["kind"] == "t5" for c in followed.json()["data"]["children"])
    found = get(fake_reddit, "/subreddits/search.json", q="medi").json()["data"]["children"]
    assert [c["data"]["display_name"] for c in found] == ["medicine"]

    fake_reddit.set_subreddit_state(SUB, "public")
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 200
    with pytest.raises(ValueError, match="unknown subreddit state"):
        fake_reddit.set_subreddit_state(SUB, "archived")


# --- lifecycle and control endpoints ----------------------------------------------------------------


def test_stop_closes_kept_alive_connections(fake_reddit_factory: Callable[..., FakeReddit]) -> None:
    fake = fake_reddit_factory()
    session = requests.Session()
    session.headers.update(UA)
    assert session.get(fake.url + f"/r/{SUB}/new", timeout=5).status_code == 200
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(fake.url + f"/r/{SUB}/new", timeout=5)
    assert fake.start() == fake.url  # a restart reuses the port
    assert session.get(fake.url + f"/r/{SUB}/new", timeout=5).status_code == 200


def test_control_endpoints(fake_reddit: FakeReddit) -> None:
    def post(path: str, body: Any) -> requests.Response:
        return requests.post(fake_reddit.url + path, json=body, timeout=10)

    added = post("/_fake/posts", {"subreddit": SUB, "n": 3}).json()["ids"]
    assert len(added) == 3
    one = post(
        "/_fake/posts", {"subreddit": SUB, "post": {"title": "hello", "score": 5}, "absent": ["link_flair_text"]}
    ).json()["ids"][0]
    shown = listing(fake_reddit, limit=1)["children"][0]["data"]
    assert shown["id"] == one and shown["title"] == "hello" and "link_flair_text" not in shown

    assert post("/_fake/faults", {"kind": "503", "count": 1}).json() == {"ok": True}
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 503
    assert post("/_fake/faults", {"rate": 1.0, "kinds": ["500"]}).status_code == 200
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 500
    assert post("/_fake/faults", {"rate": 0.0, "kinds": []}).status_code == 200

    assert post("/_fake/remove", {"id": added[0]}).status_code == 200
    assert post("/_fake/delete", {"id": added[1]}).status_code == 200
    assert post("/_fake/sticky", {"id": added[2], "stickied": True}).status_code == 200
    state = requests.get(fake_reddit.url + "/_fake/state", timeout=10).json()
    assert state["posts"] == {SUB: [one, added[2]]}
    assert post("/_fake/approve", {"id": added[0]}).status_code == 200
    assert listing(fake_reddit, f"/r/{SUB}/hot")["children"][0]["data"]["id"] == added[2]
    assert post("/_fake/subreddit", {"subreddit": SUB, "state": "private"}).status_code == 200
    assert get(fake_reddit, f"/r/{SUB}/new").status_code == 403

    state = requests.get(fake_reddit.url + "/_fake/state", timeout=10).json()
    assert set(state["ever_listed"]) == {one, added[2], added[0]}
    assert state["requests"] == len(fake_reddit.requests_log)
    assert not any(e["path"].startswith("/_fake/") for e in fake_reddit.requests_log)

    bad = requests.post(fake_reddit.url + "/_fake/posts", data=b"{nope", timeout=10)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    assert post("/_fake/delete", {"id": "zzzzzzz"}).status_code == 400
    assert post("/_fake/faults", {"kind": "teapot"}).status_code == 400
    assert post("/_fake/nothing", {}).status_code == 400


def test_standalone_server_seeds_trickles_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "reddit_dagster.simulators.fake_reddit", "--port", "0"),
            *("--subreddits", "healthcare,medicine", "--seed-posts", "4", "--trickle-seconds", "0.2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        url = match.group(0)

        def total() -> int:
            posts = requests.get(url + "/_fake/state", timeout=5).json()["posts"]
            return sum(len(ids) for ids in posts.values())

        assert total() >= 8
        assert wait_until(lambda: total() >= 11, timeout=10)
        data = requests.get(url + "/r/healthcare/new.json", headers=UA, timeout=5).json()["data"]
        assert len(data["children"]) >= 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
