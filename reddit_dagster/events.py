"""The Amplitude event for a post, schema version 1 (DESIGN §4).

Built once, when the post is recorded, and frozen in the outbox: a resend is byte-for-byte the same
event, so Amplitude's insert_id dedupe applies. Schema changes bump SCHEMA_VERSION and are additive.
"""

from __future__ import annotations

import hashlib
from typing import Any

from reddit_dagster.posts import Post

EVENT_TYPE = "Reddit Post Created"
SCHEMA_VERSION = 1
# Amplitude truncates string values (ids and properties) longer than 1024 characters; we truncate
# every string first so the stored event is exactly what Amplitude keeps. Its "characters" may be
# UTF-16 code units (a JVM backend) where the SDK counts code points, so the limit is applied in
# UTF-16 units, which satisfies both readings (an emoji counts 2) and never splits a pair.
MAX_STRING_CHARS = 1024
REDDIT_BASE = "https://www.reddit.com"


def insert_id_for(post_id: str, event_type: str = EVENT_TYPE) -> str:
    """Deterministic per (event type, post id): the same on every resend, by any process."""
    slug = event_type.lower().replace(" ", "-")
    return f"{slug}-{post_id}"


def device_id_for(post_id: str) -> str:
    """A stable device id for posts without a real author (>= 5 chars, never a placeholder value)."""
    digest = hashlib.sha256(post_id.encode()).hexdigest()[:16]
    return f"reddit-post-{digest}"


def _truncate(value: str | None) -> str | None:
    if value is None or len(value.encode("utf-16-le")) <= 2 * MAX_STRING_CHARS:
        return value
    units = 0
    for index, char in enumerate(value):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > MAX_STRING_CHARS:
            return value[:index]
    return value


def build_event(post: Post) -> dict[str, Any]:
    """The complete event dict, as sent to Amplitude's HTTP V2 API."""
    properties: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "post_id": post.id,
        "subreddit": _truncate(post.subreddit),
        "title": _truncate(post.title),
        "author": _truncate(post.author),
        "permalink": _truncate(REDDIT_BASE + post.permalink if post.permalink.startswith("/") else post.permalink),
        "url": _truncate(post.url),
        "domain": _truncate(post.domain),
        "is_self": post.is_self,
        "flair": _truncate(post.flair),
        "over_18": post.over_18,
        "created_utc": int(post.created_utc),
    }
    event: dict[str, Any] = {
        "event_type": EVENT_TYPE,
        "time": round(post.created_utc * 1000),
        "insert_id": insert_id_for(post.id),
        # The SDK drops properties whose value is None; drop them here so the frozen payload is
        # exactly what goes over the wire.
        "event_properties": {k: v for k, v in properties.items() if v is not None},
    }
    if post.real_author:
        event["user_id"] = _truncate(f"reddit:{post.real_author}")
    else:
        event["device_id"] = device_id_for(post.id)
    return event
