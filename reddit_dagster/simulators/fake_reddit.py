"""A faithful fake of Reddit's listing API, served over real HTTP on 127.0.0.1.

It behaves as research/reddit.md describes, following the open-source r2 code where Reddit is
otherwise silent. One server answers both the "www" paths (`POST /api/v1/access_token`,
`/r/{sub}/new.json`) and the "oauth" paths (`/r/{sub}/new`, no suffix needed).

Listings (`/r/{sub}/new`, `/r/{sub}/hot`, `/r/{sub}/best`, `/r/{sub}`; each also with `.json`):
- `limit` defaults to 25, clamped to 1..100; a non-integer falls back to 25. `count` < 0 or not
  an integer counts as 0.
- `after=X`: the `limit` items after X (older, in /new). `before=X` (wins over `after`): the
  `limit` items immediately newer than X, output newest first.
- An anchor naming a post that is not in the listing (deleted, removed, other subreddit, beyond
  `listing_cap`) gives an empty page with `after: null`. A fullname naming no post at all is
  ignored, so the first page is served (r2's VByName drops it).
- Response `after` = last child whenever the page is full, even if nothing follows; response
  `before` only when `count` says earlier items were seen (r2 `QueryBuilder.get_items`).
- Only the newest `listing_cap` posts are reachable.
- hot: stickies (at most 2) first, then score descending (newer first on ties); the first page
  (no anchor) returns `limit + #stickies` children.
- Without `raw_json=1` every string in a post has `&`, `<`, `>` HTML-escaped (Reddit's legacy
  escaping applies to the whole body, so urls get `&amp;` too).
- Envelope `modhash`/`geo_filter` are "" for anonymous requests and null for bearer requests,
  as recorded on www and oauth respectively.

Other endpoints: `/api/info?id=t3_a,t3_b` and `/by_id/t3_a,t3_b` (posts in any state: a deleted
post shows author "[deleted]" without `author_fullname`), `/subreddits/search?q=` (t5 listing).

Choices where Reddit's behaviour is not documented:
- A missing or blank User-Agent gets 429 JSON `{"message": "Too Many Requests", "error": 429}`
  (Reddit throttles unidentified clients) without rate-limit headers.
- A subreddit is public and empty until posts are added or its state is set.
- Rate-limit headers are on every API answer the application produces (listings, 302/403/404,
  and the "500", "429_json", "401_token", "malformed_json", "wrong_shape", "empty_page" faults),
  each of which uses one request of the budget. Answers made "at the edge" (the "429_html",
  "403_blocked_html", "200_html", "502", "503", "504", "520", "522" faults, the user-agent 429,
  401s) carry none and use none. The token endpoint is not metered.
- With `client_id`/`client_secret` unset, bearer tokens are optional and the token endpoint
  accepts any client credentials.

Faults: `fail_next(kind, count, path_contains)` answers the next `count` matching requests with the
fault (matching = `path_contains` is a substring of the request target, path plus query; None
matches every API request except the token endpoint). `set_fault_rate(rate, kinds)` injects random
faults into listing requests, deterministic for a given seed and request order.

Out-of-process control (for `make demo` and subprocess tests), JSON in and out:
  POST /_fake/posts      {"subreddit", "n", ...fields} | {"subreddit", "post": {...}, "absent": [keys]}
  POST /_fake/faults     {"kind", "count", "path_contains"?} | {"rate", "kinds"}
  POST /_fake/delete | /_fake/remove | /_fake/approve   {"id"}
  POST /_fake/sticky     {"id", "stickied"}
  POST /_fake/subreddit  {"subreddit", "state"}
  GET  /_fake/state      -> {"ever_listed": [...], "posts": {sub: [ids newest first]}, "requests": N}

Run standalone:
  python -m reddit_dagster.simulators.fake_reddit --port 8081 --subreddits healthcare,medicine \
      --seed-posts 30 --trickle-seconds 20
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import html
import json
import random
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

FAULT_KINDS = frozenset(
    {
        "429_html",
        "429_json",
        "500",
        "502",
        "503",
        "504",
        "520",
        "522",
        "403_blocked_html",
        "200_html",
        "malformed_json",
        "wrong_shape",
        "empty_page",
        "reset",
        "slow",
        "401_token",
    }
)
# Faults answered by the application: they carry rate-limit headers and use the budget.
APP_FAULTS = frozenset({"429_json", "500", "401_token", "malformed_json", "wrong_shape", "empty_page"})
EMPTY_BODY_FAULTS = frozenset({"502", "503", "504", "520", "522"})
SUBREDDIT_STATES = frozenset({"public", "private", "quarantined", "banned", "nonexistent"})
# "wrong_shape" answers cycle through these: 200 JSON that is not a Listing.
WRONG_SHAPES: tuple[Any, ...] = (
    {"kind": "t3", "data": {}},
    [],
    {"kind": "Listing", "data": {"children": "not a list"}},
)
MALFORMED_JSON = (
    b'{"kind": "Listing", "data": {"after": null, "dist": 1, "modhash": "", "geo_filter": "", '
    b'"children": [{"kind": "t3", "data": {"id": "1'
)

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_STICKIES = 2
TOKEN_PATH = "/api/v1/access_token"
CONTROL_PREFIX = "/_fake/"
WWW = "https://www.reddit.com"

JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=UTF-8"

_LISTING_PATH = re.compile(r"^/r/(?P<sub>[A-Za-z0-9_]{1,21})(?:/(?P<sort>new|hot|best))?/?(?:\.json)?$")
_SEARCH_PATH = re.compile(r"^/subreddits/search/?(?:\.json)?$")
_INFO_PATH = re.compile(r"^/api/info/?(?:\.json)?$")
_BY_ID_PATH = re.compile(r"^/by_id/(?P<names>[^/]+?)/?(?:\.json)?$")
_FULLNAME = re.compile(r"^t3_(?P<id>[0-9a-z]{1,16})$")

# Ids track the wall clock (100 per second since 2020-09-13) so that a restarted fake never
# re-issues an id an earlier run handed out; 7 base36 characters, like current Reddit ids.
_ID_EPOCH = 1_600_000_000
_ID_BASE = 36**6
_id_lock = threading.Lock()
_last_id = 0


def _next_post_number() -> int:
    global _last_id
    with _id_lock:
        _last_id = max(_ID_BASE + int((time.time() - _ID_EPOCH) * 100), _last_id + 1)
        return _last_id


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def _stable_id(text: str, width: int) -> str:
    return base36(zlib.crc32(text.encode("utf-8")) + 36 ** (width - 1))[:width]


def escape_legacy(value: Any) -> Any:
    """Reddit's legacy escaping of every string in a JSON body (what raw_json=1 turns off)."""
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if isinstance(value, dict):
        return {k: escape_legacy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_legacy(v) for v in value]
    return value


def parse_limit(raw: str | None) -> int:
    """r2 VLimit: default 25, clamped to 1..100, a non-integer means the default."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        return min(max(int(raw), 1), MAX_LIMIT)
    except ValueError:
        return DEFAULT_LIMIT


def parse_count(raw: str | None) -> int:
    """r2 VCount: not an integer or negative means 0."""
    try:
        return max(int(raw), 0) if raw is not None else 0
    except ValueError:
        return 0


def paginate(
    names: list[str], anchor: str | None, reverse: bool, num: int, start_count: int
) -> tuple[list[str], str | None, str | None]:
    """One page of `names` (newest first) as r2's IDBuilder/QueryBuilder/Listing build it.

    Returns (page, response_before, response_after). `reverse` means the anchor came as `before`.
    """
    seq = list(reversed(names)) if reverse else list(names)
    if anchor is not None:
        try:
            seq = seq[seq.index(anchor) + 1 :]
        except ValueError:
            seq = []
    page = seq[:num]
    have_next = len(page) >= num
    first = page[0] if page and start_count > 0 else None
    last = page[-1] if page else None
    if reverse:
        page.reverse()
        after, before, bcount = first, (last if have_next else None), start_count - len(page)
    else:
        after, before, bcount = (last if have_next else None), first, start_count + 1
    return page, (before if bcount > 1 else None), after


def selftext_html(selftext: str) -> str | None:
    if not selftext:
        return None
    paragraphs = [p for p in selftext.split("\n\n") if p.strip()] or [selftext]
    body = "\n\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)
    return f'<!-- SC_OFF --><div class="md">{body}\n</div><!-- SC_ON -->'


def _slug(title: str, max_length: int = 50) -> str:
    """r2's title_to_url."""
    slug = re.sub(r"\s+", "_", title)
    slug = re.sub(r"[^\w\-.!~]", "", slug)
    slug = re.sub(r"_+", "_", slug).strip("_").lower()
    if len(slug) > max_length:
        slug = slug[:max_length]
        cut = slug.rfind("_")
        if cut > 0:
            slug = slug[:cut]
    return slug or "_"


# --- realistic content -------------------------------------------------------------------------

_TOPICS = (
    "prior authorization",
    "medical billing",
    "ICU staffing",
    "telehealth",
    "Medicare Advantage",
    "EHR migration",
    "nurse burnout",
    "price transparency",
    "HIPAA compliance",
    "patient portals",
    "surprise billing",
    "rural hospital closures",
    "340B drug pricing",
    "value-based care",
    "ER wait times",
    "travel nursing",
    "Medicaid redeterminations",
    "AI scribes",
    "home health",
    "claims denials",
)
_TEMPLATES = (
    "How does your clinic handle {t}?",
    "{T} is getting worse - anyone else seeing this?",
    "Question about {t} & insurance appeals",
    "Thoughts on the new {t} rules?",
    "PSA: {t} deadline is coming up",
    "Is {t} worth it for a small practice?",
    "Weekly discussion: {t}",
    "New report on {t} (and what it means for patients)",
    "Career advice: moving into {t}?",
    "Why is {t} still so hard in 2026?",
    "{T}: costs < benefits? Looking for data",
)
_SENTENCES = (
    "We are a small practice and this takes weeks.",
    "Curious how others handle it.",
    "Our admin team is stretched thin.",
    "Patients keep asking us and we don't have a good answer.",
    "I've worked in revenue cycle for 8 years & never seen it this bad.",
    "Any pointers to good resources would be appreciated.",
    "Throwaway account for obvious reasons.",
    "Edit: thanks for all the replies!",
)
_USER_HEAD = ("tired", "night", "curious", "rural", "former", "retired", "billing", "ortho", "peds")
_USER_TAIL = ("rn", "md", "pa", "coder", "admin", "nurse", "doc", "pharmd", "medic")
_FLAIRS = ("Discussion", "Question", "News", "Policy", "Career", "Rant", "Resource", None, None)
_LINK_DOMAINS = ("statnews.com", "kff.org", "fiercehealthcare.com", "cms.gov", "healthaffairs.org")


class ContentGenerator:
    """Varied, healthcare-like post fields, reproducible from a seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def fields(self, *, allow_deleted_author: bool = False) -> dict[str, Any]:
        rng = self._rng
        topic = rng.choice(_TOPICS)
        title = rng.choice(_TEMPLATES).format(t=topic, T=topic[0].upper() + topic[1:])
        author = f"{rng.choice(_USER_HEAD)}_{rng.choice(_USER_TAIL)}_{rng.randint(1, 9999)}"
        if allow_deleted_author and rng.random() < 0.05:
            author = "[deleted]"
        is_self = rng.random() < 0.7
        fields: dict[str, Any] = {
            "title": title,
            "author": author,
            "link_flair_text": rng.choice(_FLAIRS),
            "is_self": is_self,
            "over_18": rng.random() < 0.01,
            "score": rng.randint(1, 400),
            "num_comments": rng.randint(0, 120),
            "upvote_ratio": round(rng.uniform(0.5, 1.0), 2),
        }
        if is_self:
            fields["selftext"] = " ".join(rng.sample(_SENTENCES, rng.randint(1, 4)))
        else:
            domain = rng.choice(_LINK_DOMAINS)
            fields["url"] = f"https://{domain}/{_slug(title)}?utm_source=reddit&ref=share"
        return fields


# --- state ---------------------------------------------------------------------------------------


@dataclass
class _Post:
    id: str
    number: int
    sub_key: str
    created_utc: float
    data: dict[str, Any]  # the live (raw_json=1) t3 data, without state-dependent fields
    status: str = "live"  # "live" | "deleted" (by author) | "removed" (by a moderator)

    @property
    def fullname(self) -> str:
        return f"t3_{self.id}"

    @property
    def order_key(self) -> tuple[float, int]:
        return (self.created_utc, self.number)


@dataclass
class _Subreddit:
    name: str
    state: str = "public"
    post_ids: list[str] = field(default_factory=list)
    stickies: list[str] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"t5_{_stable_id(self.name.lower(), 5)}"


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    listed: tuple[str, ...] = ()


def _json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> _Reply:
    try:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them rather than fail
        data = json.dumps(body).encode("utf-8")
    return _Reply(status, data, JSON_TYPE, dict(headers or {}))


def _error(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "message": message, "error": status}


def _html_page(title: str, text: str) -> bytes:
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body>"
        f"<h1>whoa there, pardner!</h1><p>{text}</p></body></html>"
    ).encode()


# --- HTTP plumbing -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeReddit) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed on 127.0.0.1.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Wake handler threads idling on keep-alive connections so they end."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-answer is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._serve(self, "POST")

    def send(self, reply: _Reply) -> bool:
        try:
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            return True
        except OSError:
            self.close_connection = True
            return False

    def reset(self) -> None:
        """Close the connection with a TCP RST and no answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()


# --- the fake ------------------------------------------------------------------------------------


class FakeReddit:
    """A fake Reddit listing API on 127.0.0.1; see the module docstring for its behaviour.

    Inspection: `ever_listed` holds the ids of every post the fake began to send in a /new or /hot
    answer (a client that timed out may not have received them). `requests_log` holds one entry per
    request except control requests, written before the answer is sent: {"method", "path",
    "target" (path and query), "params" (query, first values), "status" (0 = reset without an
    answer), "ts", "auth" (an Authorization header was present; its value is never stored)}.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_ttl_s: int = 86400,
        ratelimit_budget: int = 1000,
        ratelimit_window_s: int = 600,
        seed: int = 0,
        listing_cap: int = 1000,
        port: int = 0,
        wrong_credentials_http_200: bool = False,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.ratelimit_budget = ratelimit_budget
        self.ratelimit_window_s = ratelimit_window_s
        self.listing_cap = listing_cap
        # Reddit answers bad client credentials with HTTP 200 {"error": "invalid_grant"} at times;
        # True makes the fake do that instead of 401.
        self.wrong_credentials_http_200 = wrong_credentials_http_200
        self.slow_s = 20.0  # how long a "slow" fault waits before answering
        self.retry_after_s = 1  # retry-after of the "429_html" fault

        self.url = ""
        self.ever_listed: set[str] = set()
        self.requests_log: list[dict[str, Any]] = []

        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._content = ContentGenerator(seed)
        self._fault_rng = random.Random(seed)
        self._posts: dict[str, _Post] = {}
        self._subs: dict[str, _Subreddit] = {}
        self._last_created = 0.0
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._pending_faults: list[list[Any]] = []  # [kind, remaining, path_contains]
        self._fault_rate = 0.0
        self._fault_kinds: list[str] = []
        self._wrong_shape_turn = 0
        self._window_end = 0.0
        self._used = 0

    @property
    def oauth_required(self) -> bool:
        return bool(self.client_id and self._client_secret)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve from a daemon thread; returns the base URL. A restart reuses the same port."""
        if self._server is not None:
            return self.url
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self.url = f"http://127.0.0.1:{self._port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-reddit", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeReddit:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- content ---------------------------------------------------------------------------------

    def _sub(self, name: str) -> _Subreddit:
        key = name.lower()
        if key not in self._subs:
            self._subs[key] = _Subreddit(name)
        return self._subs[key]

    def _post(self, post_id: str) -> _Post:
        post = self._posts.get(post_id.removeprefix("t3_"))
        if post is None:
            raise KeyError(f"no post with id {post_id!r}")
        return post

    def add_posts(self, subreddit: str, n: int, **fields: Any) -> list[dict[str, Any]]:
        """Add n posts, newest last, with strictly increasing whole-second created_utc ending near now."""
        with self._lock:
            start = max(self._last_created + 1, float(int(time.time()) - n + 1))
            return [self.add_post(subreddit, created_utc=start + i, **fields) for i in range(n)]

    def add_post(self, subreddit: str, *, created_utc: float | None = None, **fields: Any) -> dict[str, Any]:
        """Add one post; `fields` override the generated ones (a value ABSENT drops the key).

        A created_utc older than existing posts puts the post at that time position in /new, as a
        late mod approval does. Returns the post's data as served with raw_json=1.
        """
        with self._lock:
            if created_utc is None:
                created_utc = max(self._last_created + 1, float(int(time.time())))
            created_utc = float(created_utc)
            self._last_created = max(self._last_created, created_utc)
            sub = self._sub(subreddit)
            number = _next_post_number()
            post_id = base36(number)
            data = self._build_data(sub, post_id, created_utc, fields)
            post = _Post(post_id, number, subreddit.lower(), created_utc, data)
            self._posts[post_id] = post
            sub.post_ids.append(post_id)
            if data.get("stickied") is True:
                self._stick(sub, post_id)
            return self._render(post)

    def _build_data(
        self, sub: _Subreddit, post_id: str, created_utc: float, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        generated = self._content.fields()
        if "is_self" not in fields and ("url" in fields or "selftext" in fields):
            # a given url makes a link post, a given selftext a self post
            generated["is_self"] = "url" not in fields
            generated.pop("url" if "selftext" in fields else "selftext", None)
        base = {**generated, **{k: v for k, v in fields.items() if v is not ABSENT}}
        title = str(base["title"])
        is_self = bool(base.get("is_self", True))
        permalink = f"/r/{sub.name}/comments/{post_id}/{_slug(title)}/"
        selftext = str(base.get("selftext", "")) if is_self else ""
        url = base.get("url") if not is_self else f"{WWW}{permalink}"
        domain = f"self.{sub.name}" if is_self else (urlsplit(str(url)).hostname or "")
        author = str(base["author"])
        score = int(base.get("score", 1))
        data: dict[str, Any] = {
            "approved_at_utc": None,
            "subreddit": sub.name,
            "selftext": selftext,
            "author_fullname": f"t2_{_stable_id(author, 8)}",
            "saved": False,
            "gilded": 0,
            "clicked": False,
            "title": title,
            "link_flair_richtext": [],
            "subreddit_name_prefixed": f"r/{sub.name}",
            "hidden": False,
            "pwls": 6,
            "link_flair_css_class": "" if base.get("link_flair_text") else None,
            "downs": 0,
            "thumbnail_height": None,
            "top_awarded_type": None,
            "hide_score": False,
            "name": f"t3_{post_id}",
            "quarantine": False,
            "link_flair_text_color": "dark",
            "upvote_ratio": 0.9,
            "author_flair_background_color": None,
            "subreddit_type": "public",
            "ups": score,
            "total_awards_received": 0,
            "media_embed": {},
            "thumbnail_width": None,
            "author_flair_template_id": None,
            "is_original_content": False,
            "user_reports": [],
            "secure_media": None,
            "is_reddit_media_domain": False,
            "is_meta": False,
            "category": None,
            "secure_media_embed": {},
            "link_flair_text": None,
            "can_mod_post": False,
            "score": score,
            "approved_by": None,
            "is_created_from_ads_ui": False,
            "author_premium": False,
            "thumbnail": "self" if is_self else "default",
            "edited": False,
            "author_flair_css_class": None,
            "author_flair_richtext": [],
            "gildings": {},
            "content_categories": None,
            "is_self": is_self,
            "subreddit_id": sub.fullname,
            "mod_note": None,
            "created": created_utc,
            "link_flair_type": "text",
            "wls": 6,
            "removed_by_category": None,
            "banned_by": None,
            "author_flair_type": "text",
            "domain": domain,
            "allow_live_comments": False,
            "selftext_html": selftext_html(selftext),
            "likes": None,
            "suggested_sort": None,
            "banned_at_utc": None,
            "view_count": None,
            "archived": False,
            "no_follow": score < 2,
            "is_crosspostable": True,
            "pinned": False,
            "over_18": False,
            "all_awardings": [],
            "awarders": [],
            "media_only": False,
            "can_gild": False,
            "spoiler": False,
            "locked": False,
            "author_flair_text": None,
            "treatment_tags": [],
            "visited": False,
            "removed_by": None,
            "mod_reason_title": None,
            "num_reports": None,
            "distinguished": None,
            "subreddit_subscribers": 43210,
            "author_patreon_flair": False,
            "mod_reason_by": None,
            "num_crossposts": 0,
            "num_comments": 0,
            "send_replies": True,
            "contest_mode": False,
            "author": author,
            "id": post_id,
            "mod_reports": [],
            "removal_reason": None,
            "report_reasons": None,
            "discussion_type": None,
            "permalink": permalink,
            "stickied": False,
            "url": url,
            "whitelist_status": "all_ads",
            "parent_whitelist_status": "all_ads",
            "is_robot_indexable": True,
            "media": None,
            "is_video": False,
            "created_utc": created_utc,
        }
        if not is_self:
            data["post_hint"] = "link"
            data["url_overridden_by_dest"] = url
        data.update(base)
        data.update(id=post_id, name=f"t3_{post_id}", created_utc=created_utc)
        if author in ("[deleted]", "[removed]"):
            data.pop("author_fullname", None)
        for key, value in fields.items():
            if value is ABSENT:
                data.pop(key, None)
        return data

    def _stick(self, sub: _Subreddit, post_id: str) -> None:
        if post_id not in sub.stickies:
            sub.stickies.append(post_id)
        del sub.stickies[:-MAX_STICKIES]  # a third sticky unsticks the oldest, as on Reddit

    def delete_post(self, post_id: str) -> None:
        """Author deletion: gone from listings; by id it shows author "[deleted]"."""
        with self._lock:
            self._post(post_id).status = "deleted"

    def remove_post(self, post_id: str) -> None:
        """Moderator removal: gone from listings; by id it shows selftext "[removed]"."""
        with self._lock:
            post = self._post(post_id)
            if post.status == "live":
                post.status = "removed"

    def approve_post(self, post_id: str) -> None:
        """Re-insert a removed post into listings at its original time."""
        with self._lock:
            post = self._post(post_id)
            if post.status == "deleted":
                raise ValueError(f"post {post_id} was deleted by its author and cannot be approved")
            post.status = "live"

    def set_sticky(self, post_id: str, stickied: bool) -> None:
        with self._lock:
            post = self._post(post_id)
            sub = self._subs[post.sub_key]
            if stickied:
                self._stick(sub, post.id)
            elif post.id in sub.stickies:
                sub.stickies.remove(post.id)

    def set_subreddit_state(self, subreddit: str, state: str) -> None:
        if state not in SUBREDDIT_STATES:
            raise ValueError(f"unknown subreddit state {state!r}; expected one of {sorted(SUBREDDIT_STATES)}")
        with self._lock:
            self._sub(subreddit).state = state

    def update_post(self, post_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a post in place (score, num_comments, title, ...)."""
        with self._lock:
            post = self._post(post_id)
            for key, value in fields.items():
                if value is ABSENT:
                    post.data.pop(key, None)
                else:
                    post.data[key] = value
            if "score" in fields and fields["score"] is not ABSENT:
                post.data["ups"] = fields["score"]
            return self._render(post)

    # --- faults ----------------------------------------------------------------------------------

    def fail_next(self, kind: str, count: int = 1, path_contains: str | None = None) -> None:
        _check_fault_kinds([kind])
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._lock:
            self._pending_faults.append([kind, count, path_contains])

    def set_fault_rate(self, rate: float, kinds: list[str]) -> None:
        """Answer each listing request with a random fault from `kinds` with probability `rate`."""
        _check_fault_kinds(kinds)
        if not 0.0 <= rate <= 1.0 or (rate > 0 and not kinds):
            raise ValueError(f"fault rate must be in [0, 1] with at least one kind, got {rate} {kinds}")
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = list(kinds)

    def expire_tokens(self) -> None:
        """Make every issued bearer token expired, as if its lifetime had passed."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    @property
    def pending_faults(self) -> int:
        """How many fail_next faults are still to be served."""
        with self._lock:
            return sum(int(entry[1]) for entry in self._pending_faults)

    def _take_fault(self, target: str, path: str, is_listing: bool) -> str | None:
        for entry in self._pending_faults:
            kind, _, contains = entry
            matches = contains in target if contains is not None else path != TOKEN_PATH
            if matches:
                entry[1] -= 1
                if entry[1] == 0:
                    self._pending_faults.remove(entry)
                return str(kind)
        if is_listing and self._fault_rate > 0 and self._fault_rng.random() < self._fault_rate:
            return self._fault_rng.choice(self._fault_kinds)
        return None

    # --- inspection ------------------------------------------------------------------------------

    def posts(self, subreddit: str) -> list[dict[str, Any]]:
        """Every post now visible in the subreddit's /new, newest first (not cut at listing_cap)."""
        with self._lock:
            sub = self._subs.get(subreddit.lower())
            return [self._render(self._posts[pid]) for pid in self._new_ids(sub)] if sub else []

    def post(self, post_id: str) -> dict[str, Any]:
        """One post as /api/info would show it (any state)."""
        with self._lock:
            return self._render(self._post(post_id))

    def count_requests(self, path_contains: str) -> int:
        """Requests (control endpoints excluded) whose target (path and query) contains the string."""
        with self._lock:
            return sum(1 for entry in self.requests_log if path_contains in entry["target"])

    def wait_for_requests(self, path_contains: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_requests(path_contains) >= n:
                return True
            time.sleep(0.01)
        return self.count_requests(path_contains) >= n

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ever_listed": sorted(self.ever_listed),
                "posts": {sub.name: self._new_ids(sub) for sub in self._subs.values()},
                "requests": len(self.requests_log),
            }

    # --- listings --------------------------------------------------------------------------------

    def _new_ids(self, sub: _Subreddit) -> list[str]:
        live = [self._posts[pid] for pid in sub.post_ids if self._posts[pid].status == "live"]
        live.sort(key=lambda p: p.order_key, reverse=True)
        return [p.id for p in live]

    def _hot_ids(self, sub: _Subreddit) -> tuple[list[str], list[str]]:
        """(visible stickies, the rest by score) for hot."""
        stickies = [pid for pid in sub.stickies if self._posts[pid].status == "live"]
        rest = [self._posts[pid] for pid in self._new_ids(sub) if pid not in stickies]
        rest.sort(key=lambda p: (int(p.data.get("score") or 0), p.order_key), reverse=True)
        return stickies, [p.id for p in rest]

    def _render(self, post: _Post) -> dict[str, Any]:
        data = copy.deepcopy(post.data)
        sub = self._subs[post.sub_key]
        data["stickied"] = post.id in sub.stickies
        data["subreddit_type"] = sub.state if sub.state != "nonexistent" else "public"
        if post.status == "deleted":
            data.update(author="[deleted]", selftext="[deleted]", selftext_html=None, thumbnail="default")
            data.pop("author_fullname", None)
        elif post.status == "removed":
            data.update(selftext="[removed]", selftext_html=None, removed_by_category="moderator")
        return data

    def _listing_body(
        self, posts: list[dict[str, Any]], before: str | None, after: str | None, kind: str, bearer: bool
    ) -> dict[str, Any]:
        return {
            "kind": "Listing",
            "data": {
                "after": after,
                "dist": len(posts),
                "modhash": None if bearer else "",
                "geo_filter": None if bearer else "",
                "children": [{"kind": kind, "data": p} for p in posts],
                "before": before,
            },
        }

    def _listing(self, sub: _Subreddit, sort: str, params: dict[str, str], bearer: bool) -> _Reply:
        limit, count = parse_limit(params.get("limit")), parse_count(params.get("count"))
        reverse = bool(params.get("before"))
        anchor = params.get("before") if reverse else (params.get("after") or None)
        match = _FULLNAME.match(anchor or "")
        if anchor is not None and (match is None or match["id"] not in self._posts):
            anchor, reverse = None, False  # r2 ignores a fullname that names nothing
        if sort == "new":
            names = [f"t3_{pid}" for pid in self._new_ids(sub)[: self.listing_cap]]
        else:
            stickies, rest = self._hot_ids(sub)
            names = [f"t3_{pid}" for pid in stickies + rest[: self.listing_cap]]
            if anchor is None and stickies:
                limit += len(stickies)
                count -= len(stickies)
        page, before, after = paginate(names, anchor, reverse, limit, count)
        posts = [self._render(self._posts[name[3:]]) for name in page]
        if params.get("raw_json") != "1":
            posts = escape_legacy(posts)
        reply = _json_reply(200, self._listing_body(posts, before, after, "t3", bearer))
        reply.listed = tuple(name[3:] for name in page)
        return reply

    def _search(self, params: dict[str, str], bearer: bool) -> _Reply:
        query = params.get("q", "").lower()
        found = [
            s for s in self._subs.values() if s.state not in ("nonexistent", "banned") and query in s.name.lower()
        ][: parse_limit(params.get("limit"))]
        children = [
            {
                "display_name": s.name,
                "display_name_prefixed": f"r/{s.name}",
                "name": s.fullname,
                "id": s.fullname[3:],
                "title": s.name.title(),
                "url": f"/r/{s.name}/",
                "subscribers": 43210,
                "public_description": f"Discussion of {s.name}.",
                "subreddit_type": s.state,
                "quarantine": s.state == "quarantined",
                "over18": False,
                "created_utc": 1200000000.0,
            }
            for s in found
        ]
        if params.get("raw_json") != "1":
            children = escape_legacy(children)
        return _json_reply(200, self._listing_body(children, None, None, "t5", bearer))

    def _info(self, names: Iterable[str], params: dict[str, str], bearer: bool) -> _Reply:
        posts = []
        for name in names:
            match = _FULLNAME.match(name.strip())
            if match and match["id"] in self._posts:
                posts.append(self._render(self._posts[match["id"]]))
        if params.get("raw_json") != "1":
            posts = escape_legacy(posts)
        return _json_reply(200, self._listing_body(posts, None, None, "t3", bearer))

    # --- auth and rate limit ---------------------------------------------------------------------

    def _token(self, headers: Mapping[str, str], body: bytes) -> _Reply:
        client_id, secret = _basic_credentials(headers.get("Authorization", ""))
        if self.oauth_required and (client_id != self.client_id or secret != self._client_secret):
            if self.wrong_credentials_http_200:
                return _json_reply(200, {"error": "invalid_grant"})
            return _json_reply(401, _error(401, "Unauthorized"))
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _json_reply(200, {"error": "unsupported_grant_type"})
        token = f"{secrets.randbelow(10**9)}-{secrets.token_urlsafe(24)}"
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        scope = form.get("scope") or "*"
        return _json_reply(
            200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl_s, "scope": scope}
        )

    def _bearer_ok(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        expiry = self._tokens.get(token.strip())
        return expiry is not None and time.monotonic() < expiry

    def _use_budget(self) -> tuple[bool, dict[str, str]]:
        """Count one request in the window; (allowed, x-ratelimit headers)."""
        now = time.monotonic()
        if now >= self._window_end:
            self._window_end, self._used = now + self.ratelimit_window_s, 0
        allowed = self._used < self.ratelimit_budget
        if allowed:
            self._used += 1
        headers = {
            "x-ratelimit-used": str(self._used),
            "x-ratelimit-remaining": f"{float(self.ratelimit_budget - self._used):.1f}",
            "x-ratelimit-reset": str(max(int(self._window_end - now), 0)),
        }
        return allowed, headers

    # --- request handling ------------------------------------------------------------------------

    def _serve(self, handler: _Handler, method: str) -> None:
        target = handler.path
        split = urlsplit(target)
        path = split.path
        params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        if path.startswith(CONTROL_PREFIX):
            handler.send(self._control(method, path, body))
            return
        is_listing = method == "GET" and _LISTING_PATH.match(path) is not None
        with self._lock:
            fault = self._take_fault(target, path, is_listing)
        if fault == "slow":
            fault = None
            if self._stopping.wait(self.slow_s):
                fault = "reset"  # stopping: give up on the answer
        # Log (and note listed posts) before answering, so a client that has its answer always
        # finds its request in the log. Hence ever_listed holds what the fake began to send.
        if fault == "reset":
            self._log(method, path, target, params, 0, handler.headers)
            handler.reset()
            return
        with self._lock:
            reply = self._fault_reply(fault) if fault else self._route(method, path, params, handler.headers, body)
            self.ever_listed.update(reply.listed)
            self._log(method, path, target, params, reply.status, handler.headers)
        handler.send(reply)

    def _log(self, method: str, path: str, target: str, params: dict[str, str], status: int, headers: Any) -> None:
        with self._lock:
            self.requests_log.append(
                {
                    "method": method,
                    "path": path,
                    "target": target,
                    "params": params,
                    "status": status,
                    "ts": time.time(),
                    "auth": "Authorization" in headers,
                }
            )

    def _route(self, method: str, path: str, params: dict[str, str], headers: Mapping[str, str], body: bytes) -> _Reply:
        if not headers.get("User-Agent", "").strip():
            return _json_reply(429, _error(429, "Too Many Requests"))
        if path == TOKEN_PATH:
            if method != "POST":
                return _json_reply(405, _error(405, "Method Not Allowed"))
            return self._token(headers, body)
        listing = _LISTING_PATH.match(path)
        by_id = _BY_ID_PATH.match(path)
        known = listing or by_id or _SEARCH_PATH.match(path) or _INFO_PATH.match(path)
        if method != "GET" or not known:
            return _json_reply(404, _error(404, "Not Found"))
        bearer = self._bearer_ok(headers)
        if self.oauth_required and not bearer:
            return _unauthorized()
        allowed, rl = self._use_budget()
        if not allowed:
            return _json_reply(429, _error(429, "Too Many Requests"), rl)
        if listing:
            sub = self._sub(listing["sub"])
            refusal = self._refusal(sub, path, rl)
            if refusal:
                return refusal
            reply = self._listing(sub, listing["sort"] or "hot", params, bearer)
        elif by_id:
            reply = self._info(by_id["names"].split(","), params, bearer)
        elif _INFO_PATH.match(path):
            reply = self._info(params.get("id", "").split(","), params, bearer)
        else:
            reply = self._search(params, bearer)
        reply.headers.update(rl)
        return reply

    def _refusal(self, sub: _Subreddit, path: str, rl: dict[str, str]) -> _Reply | None:
        if sub.state == "private":
            return _json_reply(403, _error(403, "Forbidden", reason="private"), rl)
        if sub.state == "quarantined":
            body = _error(
                403,
                "Forbidden",
                reason="quarantined",
                quarantine_message="This community is quarantined.",
            )
            return _json_reply(403, body, rl)
        if sub.state == "banned":
            return _json_reply(404, _error(404, "Not Found", reason="banned"), rl)
        if sub.state == "nonexistent":
            suffix = ".json" if path.endswith(".json") else ""
            location = f"{self.url}/subreddits/search{suffix}?q={quote(sub.name)}"
            return _Reply(302, b"", None, {**rl, "Location": location})
        return None

    def _fault_reply(self, kind: str) -> _Reply:
        rl = self._use_budget()[1] if kind in APP_FAULTS else {}
        if kind == "429_html":
            text = f"please wait {self.retry_after_s} second(s) and try again."
            return _Reply(
                429, _html_page("Too Many Requests", text), HTML_TYPE, {"retry-after": str(self.retry_after_s)}
            )
        if kind == "429_json":
            return _json_reply(429, _error(429, "Too Many Requests"), rl)
        if kind == "500":
            return _json_reply(500, _error(500, "Internal Server Error"), rl)
        if kind in EMPTY_BODY_FAULTS:
            return _Reply(int(kind))
        if kind == "403_blocked_html":
            text = (
                "Your request has been blocked due to a network policy. You've been blocked by network "
                "security. To continue, log in to your Reddit account or use your developer token."
            )
            return _Reply(403, _html_page("Blocked", text), HTML_TYPE)
        if kind == "200_html":
            page = b"<!doctype html><html><head><title>reddit</title></head><body>Log in to Reddit</body></html>"
            return _Reply(200, page, HTML_TYPE)
        if kind == "malformed_json":
            return _Reply(200, MALFORMED_JSON, JSON_TYPE, rl)
        if kind == "wrong_shape":
            shape = WRONG_SHAPES[self._wrong_shape_turn % len(WRONG_SHAPES)]
            self._wrong_shape_turn += 1
            return _json_reply(200, shape, rl)
        if kind == "empty_page":
            return _json_reply(200, self._listing_body([], None, None, "t3", bearer=False), rl)
        if kind == "401_token":
            reply = _unauthorized()
            reply.headers.update(rl)
            return reply
        raise AssertionError(f"unhandled fault kind {kind}")

    # --- control endpoints -----------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            if method == "GET" and path == "/_fake/state":
                return _json_reply(200, self.state())
            if method != "POST":
                return _json_reply(404, {"error": f"no control endpoint {method} {path}"})
            try:
                payload = json.loads(body or b"{}")
            except ValueError as exc:
                return _json_reply(400, {"error": f"body is not JSON: {exc}"})
            if not isinstance(payload, dict):
                return _json_reply(400, {"error": "body must be a JSON object"})
            return _json_reply(200, self._control_post(path, payload))
        except (KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return _json_reply(400, {"error": f"{type(exc).__name__}: {message}"})

    def _control_post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        if path == "/_fake/posts":
            subreddit = str(payload["subreddit"])
            if "post" in payload:
                fields = dict(payload["post"])
                fields.update(dict.fromkeys(payload.get("absent", []), ABSENT))
                return {"ids": [self.add_post(subreddit, **fields)["id"]]}
            extra = {k: v for k, v in payload.items() if k not in ("subreddit", "n")}
            return {"ids": [p["id"] for p in self.add_posts(subreddit, int(payload["n"]), **extra)]}
        if path == "/_fake/faults":
            if "rate" in payload:
                self.set_fault_rate(float(payload["rate"]), list(payload.get("kinds", [])))
            else:
                self.fail_next(str(payload["kind"]), int(payload.get("count", 1)), payload.get("path_contains"))
            return {"ok": True}
        actions = {"/_fake/delete": self.delete_post, "/_fake/remove": self.remove_post}
        actions["/_fake/approve"] = self.approve_post
        if path in actions:
            actions[path](str(payload["id"]))
            return {"ok": True}
        if path == "/_fake/sticky":
            self.set_sticky(str(payload["id"]), bool(payload.get("stickied", True)))
            return {"ok": True}
        if path == "/_fake/subreddit":
            self.set_subreddit_state(str(payload["subreddit"]), str(payload["state"]))
            return {"ok": True}
        raise KeyError(f"no control endpoint POST {path}")


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""Pass as a field value to add_post/update_post to leave that key out of the post."""


def _unauthorized() -> _Reply:
    return _json_reply(
        401, _error(401, "Unauthorized"), {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'}
    )


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else (None, None)


def _check_fault_kinds(kinds: Iterable[str]) -> None:
    unknown = sorted(set(kinds) - FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; expected some of {sorted(FAULT_KINDS)}")


# --- standalone ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake Reddit listing API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--subreddits", default="healthcare", help="comma-separated names")
    parser.add_argument("--seed-posts", type=int, default=30, help="posts per subreddit at start")
    parser.add_argument("--trickle-seconds", type=float, default=20.0, help="add a post this often; 0 = never")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-id", default=None, help="require OAuth with this client id")
    parser.add_argument("--client-secret", default=None)
    parser.add_argument("--listing-cap", type=int, default=1000)
    args = parser.parse_args(argv)
    subreddits = [s.strip() for s in args.subreddits.split(",") if s.strip()]
    if not subreddits:
        parser.error("--subreddits names no subreddit")

    fake = FakeReddit(
        client_id=args.client_id,
        client_secret=args.client_secret,
        seed=args.seed,
        listing_cap=args.listing_cap,
        port=args.port,
    )
    rng = random.Random(args.seed)
    content = ContentGenerator(args.seed + 1)
    now = time.time()
    for sub in subreddits:
        created = now - args.seed_posts * 600
        for _ in range(args.seed_posts):
            created += rng.randint(60, 1100)
            fake.add_post(sub, created_utc=float(int(min(created, now))), **content.fields())

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = fake.start()
    except OSError as exc:
        print(f"fake-reddit: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"fake-reddit listening on {url} (subreddits: {', '.join(subreddits)})", flush=True)
    try:
        period = args.trickle_seconds if args.trickle_seconds > 0 else None
        while not stop.wait(period if period else 3600):
            if period:
                fake.add_post(rng.choice(subreddits), **content.fields(allow_deleted_author=True))
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
