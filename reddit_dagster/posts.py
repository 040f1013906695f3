"""The typed Post and the parsing of a Reddit listing child into one.

Reddit text is untrusted: PostgreSQL's text and jsonb types reject the NUL character, and JSON may
carry lone UTF-16 surrogates that UTF-8 cannot encode. Both are replaced by U+FFFD (the Unicode
replacement character) everywhere, including the stored raw JSON, so such a post is still recorded
rather than failing the whole batch. Everything else (emoji, RTL marks, markup) is kept intact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_POST_ID = re.compile(r"^[0-9a-z]{1,16}$")
DELETED_AUTHORS = frozenset({"[deleted]", "[removed]"})


class MalformedPost(ValueError):
    """A listing child that cannot be a post (no id, no creation time, wrong kind)."""


def clean_text(value: str) -> str:
    return _UNSTORABLE.sub(REPLACEMENT, value)


def clean_json(value: Any) -> Any:
    """Recursively replace characters PostgreSQL cannot store, in keys and values."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Post:
    id: str  # base36, without the "t3_" prefix
    subreddit: str
    title: str
    author: str | None
    created_utc: float
    permalink: str
    url: str | None = None
    domain: str | None = None
    is_self: bool = False
    flair: str | None = None
    over_18: bool = False
    stickied: bool = False
    score: int = 0
    num_comments: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fullname(self) -> str:
        return f"t3_{self.id}"

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_utc, tz=UTC)

    @property
    def real_author(self) -> str | None:
        """The author's name, or None when the account is gone or hidden."""
        if self.author and self.author not in DELETED_AUTHORS:
            return self.author
        return None


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value != "" else None


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def parse_post(child: Any, *, subreddit: str | None = None) -> Post:
    """Parse one listing child ({"kind": "t3", "data": {...}}) or its data dict.

    Required: a base36 id and a numeric created_utc. Every other field is optional and defaults
    sensibly, so a post with missing optional fields is still recorded.
    """
    if isinstance(child, dict) and "kind" in child:
        if child.get("kind") != "t3":
            raise MalformedPost(f"listing child of kind {child.get('kind')!r}, expected 't3'")
        child = child.get("data")
    if not isinstance(child, dict):
        raise MalformedPost(f"listing child is {type(child).__name__}, expected an object")
    data = clean_json(child)
    post_id = data.get("id")
    if not isinstance(post_id, str) or not _POST_ID.match(post_id):
        raise MalformedPost(f"post without a valid id: {str(post_id)[:40]!r}")
    created = data.get("created_utc")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise MalformedPost(f"post {post_id} has no numeric created_utc")
    sub = _optional_str(data, "subreddit") or subreddit or ""
    title = data.get("title")
    return Post(
        id=post_id,
        subreddit=sub,
        title=title if isinstance(title, str) else "",
        author=_optional_str(data, "author"),
        created_utc=float(created),
        permalink=_optional_str(data, "permalink") or f"/r/{sub}/comments/{post_id}/",
        url=_optional_str(data, "url"),
        domain=_optional_str(data, "domain"),
        is_self=data.get("is_self") is True,
        flair=_optional_str(data, "link_flair_text"),
        over_18=data.get("over_18") is True,
        stickied=data.get("stickied") is True,
        score=_int(data, "score"),
        num_comments=_int(data, "num_comments"),
        raw=data,
    )
