"""Built events against Amplitude's documented rules (research/amplitude.md §1, §3, §5; DESIGN §4).

The rules are restated here from the documentation, not imported from the fake, so a mistake in
either one shows up as a disagreement.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.emit import sdk_event
from reddit_dagster.events import EVENT_TYPE, SCHEMA_VERSION, build_event, device_id_for, insert_id_for
from reddit_dagster.posts import Post, parse_post
from reddit_dagster.schema import event_outbox
from reddit_dagster.store import record_new_posts
from tests.test_record import BASE_TIME, make_post

pytestmark = pytest.mark.timeout(60)

# Ids Amplitude answers with a 400 (HTTP V2 docs), compared case-insensitively.
PLACEHOLDER_IDS = {
    "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", "",
    "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
}
MIN_ID_LENGTH = 5
MAX_STRING = 1024
MAX_PROPERTIES = 20
TOP_LEVEL_FIELDS = {"event_type", "time", "insert_id", "user_id", "device_id", "event_properties"}
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
PROPERTY_TYPES = (str, int, float, bool)
TIME_2005_MS = 1_104_537_600_000
TIME_2100_MS = 4_102_444_800_000


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def amplitude_problems(event: dict[str, Any]) -> list[str]:
    """Every documented rule the event breaks (empty when it is fine)."""
    problems: list[str] = []
    extra = set(event) - TOP_LEVEL_FIELDS
    if extra:
        problems.append(f"unexpected top-level fields {sorted(extra)}")
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        problems.append("event_type missing")
    else:
        words = event_type.split(" ")
        if not all(word[:1].isupper() and word[1:] == word[1:].lower() for word in words):
            problems.append(f"event_type {event_type!r} is not Title Case")
        if event_type.startswith(("[Amplitude]", "$")):
            problems.append("reserved event_type")
    ids = [name for name in ("user_id", "device_id") if name in event]
    if not ids:
        problems.append("neither user_id nor device_id")
    for name in ids:
        value = event[name]
        if not isinstance(value, str) or len(value) < MIN_ID_LENGTH or value.lower() in PLACEHOLDER_IDS:
            problems.append(f"{name} {value!r} is too short or a placeholder Amplitude rejects")
    time_ms = event.get("time")
    if type(time_ms) is not int or not TIME_2005_MS <= time_ms <= TIME_2100_MS:
        problems.append(f"time {time_ms!r} is not integer milliseconds since the epoch")
    insert_id = event.get("insert_id")
    if not isinstance(insert_id, str) or len(insert_id) < 5:
        problems.append(f"insert_id {insert_id!r}")
    properties = event.get("event_properties")
    if not isinstance(properties, dict):
        problems.append("event_properties is not an object")
        properties = {}
    if len(properties) > MAX_PROPERTIES:
        problems.append(f"{len(properties)} properties (guidance: at most {MAX_PROPERTIES})")
    for key, value in properties.items():
        if not SNAKE_CASE.match(key):
            problems.append(f"property key {key!r} is not snake_case")
        if not isinstance(value, PROPERTY_TYPES):  # no None, dict, list, datetime
            problems.append(f"property {key} has type {type(value).__name__}")
    for where, value in [*((k, event.get(k)) for k in ("event_type", "insert_id", *ids)), *properties.items()]:
        if isinstance(value, str) and (len(value) > MAX_STRING or utf16_units(value) > MAX_STRING):
            problems.append(f"{where} is longer than {MAX_STRING} characters")
    if json.loads(json.dumps(event)) != event:
        problems.append("does not survive a JSON round trip")
    return problems


HOSTILE = "😀" * 3000  # 6000 UTF-16 units
CASES: dict[str, dict[str, Any]] = {
    "ordinary": {},
    "deleted author": {"author": "[deleted]"},
    "removed author": {"author": "[removed]"},
    "missing author": {"author": None},
    "empty author": {"author": ""},
    "short author": {"author": "bob"},
    "placeholder-looking author": {"author": "null"},
    "emoji title": {"title": "Clinic 🏥 wait times 😡🇺🇸 👩‍⚕️"},
    "huge title": {"title": "x" * 5000},
    "huge emoji title": {"title": HOSTILE},
    "emoji at the cut": {"title": "a" * 1023 + "😀" + "b"},
    "rtl and markup": {"title": "\u202egnp.exe <script>alert(1)</script> &amp;"},
    "nul and surrogate": {"title": "a\x00b \ud800 c"},
    "huge author": {"author": "A" * 3000},
    "huge url and domain": {"url": "https://e.com/" + HOSTILE, "domain": "d" * 2000, "is_self": False},
    "huge flair and subreddit": {"link_flair_text": HOSTILE, "subreddit": "s" * 2000},
    "fractional creation time": {"created_utc": 1_767_225_600.789},
    "integer creation time": {"created_utc": 1_767_225_600},
    "self post nsfw": {"is_self": True, "over_18": True, "link_flair_text": "Question"},
    "minimal listing child": {"title": None, "author": None, "subreddit": None},
}


def case_post(name: str) -> Post:
    fields = CASES[name]
    data: dict[str, Any] = {"id": "abc123", "created_utc": BASE_TIME + 7, "title": "t", "author": "someone",
                            "subreddit": "healthcare"}
    data.update(fields)
    return parse_post({"kind": "t3", "data": {k: v for k, v in data.items() if v is not None}},
                      subreddit="healthcare")


@pytest.mark.parametrize("name", list(CASES))
def test_built_event_follows_amplitude_rules(name: str) -> None:
    post = case_post(name)
    event = build_event(post)
    assert amplitude_problems(event) == []
    # The real SDK takes it as it is (it silently drops fields and property dicts it dislikes).
    assert sdk_event(event).get_event_body() == event


@pytest.mark.parametrize("name", list(CASES))
def test_event_carries_the_schema_v1_fields(name: str) -> None:
    post = case_post(name)
    event = build_event(post)
    props = event["event_properties"]
    assert event["event_type"] == EVENT_TYPE
    assert event["time"] == round(post.created_utc * 1000)
    assert event["insert_id"] == insert_id_for(post.id) == build_event(post)["insert_id"]
    assert props["schema_version"] == SCHEMA_VERSION
    assert props["post_id"] == post.id and not props["post_id"].startswith("t3_")
    assert props["created_utc"] == int(post.created_utc)
    assert props["permalink"].startswith("https://www.reddit.com/")
    if post.real_author:
        assert "device_id" not in event
        assert event["user_id"].startswith("reddit:")
        assert post.real_author.startswith(event["user_id"].removeprefix("reddit:"))
    else:
        assert "user_id" not in event
        assert event["device_id"] == device_id_for(post.id)


def test_truncation_keeps_a_prefix_and_never_splits_an_emoji() -> None:
    event = build_event(case_post("emoji at the cut"))
    assert event["event_properties"]["title"] == "a" * 1023  # the emoji would be units 1024-1025
    event = build_event(case_post("huge emoji title"))
    assert event["event_properties"]["title"] == "😀" * 512
    event = build_event(case_post("huge author"))
    assert event["user_id"] == "reddit:" + "A" * (MAX_STRING - len("reddit:"))
    assert event["event_properties"]["author"] == "A" * MAX_STRING


def test_identity_rules_for_missing_authors() -> None:
    for name in ("deleted author", "removed author", "missing author", "empty author"):
        assert "user_id" not in build_event(case_post(name)), name
    ids = {device_id_for(f"p{n}") for n in range(1000)}
    assert len(ids) == 1000, "device ids of different posts collide"
    assert device_id_for("abc") == device_id_for("abc")


def test_the_validator_rejects_what_amplitude_rejects() -> None:
    """The rules above can fail: each broken event is caught."""
    good = build_event(make_post(1))
    broken = {
        "short id": {**good, "user_id": "bob"},
        "placeholder id": {**good, "user_id": "Undefined"},
        "no id": {k: v for k, v in good.items() if k != "user_id"},
        "float time": {**good, "time": 1.5e12},
        "seconds, not ms": {**good, "time": 1_767_225_600},
        "none property": {**good, "event_properties": {**good["event_properties"], "flair": None}},
        "nested list": {**good, "event_properties": {"tags": [["a"]]}},
        "camel key": {**good, "event_properties": {"postId": "x"}},
        "long string": {**good, "event_properties": {"title": "x" * 1025}},
        "many properties": {**good, "event_properties": {f"p{i}": i for i in range(21)}},
        "lower-case type": {**good, "event_type": "reddit post created"},
    }
    assert amplitude_problems(good) == []
    for name, event in broken.items():
        assert amplitude_problems(event), name


def test_frozen_payload_in_the_outbox_is_the_built_event(engine: Engine) -> None:
    posts = [case_post(name) for name in CASES]
    posts = [parse_post({**p.raw, "id": f"c{i}"}) for i, p in enumerate(posts)]
    assert len(record_new_posts(engine, posts)) == len(posts)
    with engine.connect() as conn:
        frozen = {row.post_id: row.payload for row in conn.execute(sa.select(event_outbox))}
    for post in posts:
        assert frozen[post.id] == build_event(post)
        assert amplitude_problems(frozen[post.id]) == []
