"""Reddit's listing API over `requests`: OAuth or public JSON, rate limits, retries, typed errors.

Facts this follows are in research/reddit.md (§1 listings, §2 auth, rate limits and error pages):
- With REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET set, application-only OAuth (client credentials)
  against the API host; otherwise the public `.json` endpoints of the www host, which Reddit
  throttles hard and sometimes blocks.
- Every listing request carries `limit=100` and `raw_json=1` (without it Reddit HTML-escapes text).
- Redirects are never followed: Reddit answers a banned or nonexistent subreddit with a redirect to
  a search (or login) page, which would otherwise parse as a listing of subreddits.
- 429, 5xx, timeouts and connection errors are retried a bounded number of times (tenacity), then
  RedditUnavailable. Everything else fails at once with a typed error: retrying a private
  subreddit or an HTML block page only burns the rate budget.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import tenacity

from reddit_dagster import logs
from reddit_dagster.posts import MalformedPost, Post, parse_post

if TYPE_CHECKING:
    from reddit_dagster.ratelimit import SharedRateLimiter
    from reddit_dagster.settings import Settings

log = logs.get_logger(__name__)

TOKEN_PATH = "/api/v1/access_token"
PAGE_LIMIT = 100
RATELIMIT_WINDOW_S = 600.0  # Reddit's rate-limit window (prawcore const.WINDOW_SIZE)
MAX_PACING_SLEEP_S = 10.0  # prawcore never paces more than this between requests
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 522})
_SUBREDDIT_NAME = re.compile(r"^[A-Za-z0-9_]{1,21}$")
_WHITESPACE = re.compile(r"\s+")


class RedditError(RuntimeError):
    """A failure talking to Reddit. The message is one line and never contains a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(_WHITESPACE.sub(" ", message).strip())


class SubredditUnavailable(RedditError):
    """The subreddit is private, quarantined, banned or does not exist (`reason` says which)."""

    def __init__(self, subreddit: str, reason: str, detail: str) -> None:
        self.subreddit = subreddit
        self.reason = reason
        super().__init__(f"r/{subreddit} is unavailable ({reason}): {detail}")


class RedditAuthError(RedditError):
    """Reddit refused our credentials or token."""


class RedditResponseError(RedditError):
    """Reddit answered, but not with what we asked for: HTML, broken JSON, or not a Listing."""


class RedditUnavailable(RedditError):
    """Rate limits, server errors or the network kept failing after every retry."""


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `retry_after` is Reddit's requested wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Listing:
    posts: list[Post]
    after: str | None
    # Children that could not be parsed as posts, each with the reason; the walk goes on without them.
    skipped: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.posts and not self.skipped


class RedditClient:
    """One client per process or run; not thread-safe (it keeps a token and rate-limit state)."""

    def __init__(
        self,
        *,
        api_url: str,
        www_url: str,
        user_agent: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        timeout_s: float = 16.0,
        max_attempts: int = 4,
        backoff_base_s: float = 1.0,
        max_wait_s: float = 60.0,
        limiter: SharedRateLimiter | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.www_url = www_url.rstrip("/")
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.max_wait_s = max_wait_s
        # The budget shared with other processes (ratelimit.py); None: this process paces itself alone.
        self.limiter = limiter
        self._client_id = client_id or None
        self._client_secret = client_secret or None
        logs.add_secret(self._client_secret)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent
        self._token: str | None = None
        self._token_refresh_at = 0.0  # monotonic time after which the token is renewed
        self._next_request_at = 0.0  # monotonic time before which pacing holds the next request
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=backoff_base_s, jitter=backoff_base_s, max=max_wait_s
        )

        self.requests_made = 0  # every HTTP request sent, token requests and retries included
        self.token_requests = 0
        self.ratelimit_remaining: float | None = None
        self.ratelimit_used: float | None = None
        self.ratelimit_reset_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedditClient:
        secret = settings.reddit_client_secret.get_secret_value() if settings.reddit_client_secret else None
        limiter = None
        if settings.reddit_shared_limit:
            from reddit_dagster.ratelimit import SharedRateLimiter  # local: it imports this module

            limiter = SharedRateLimiter.from_settings(settings)
        return cls(
            api_url=settings.reddit_api_url,
            www_url=settings.reddit_www_url,
            user_agent=settings.reddit_user_agent,
            client_id=settings.reddit_client_id,
            client_secret=secret,
            limiter=limiter,
        )

    @property
    def uses_oauth(self) -> bool:
        return self._client_id is not None or self._client_secret is not None

    def close(self) -> None:
        self._session.close()
        if self.limiter is not None:
            self.limiter.close()

    # --- listings --------------------------------------------------------------------------------

    def new(self, subreddit: str, *, after: str | None = None, limit: int = PAGE_LIMIT) -> Listing:
        """One page of /r/{subreddit}/new, newest first, starting after the fullname `after`."""
        return self._listing(subreddit, "new", after=after, limit=limit)

    def hot(self, subreddit: str, *, limit: int = PAGE_LIMIT) -> Listing:
        """The first page of /r/{subreddit}/hot (stickies first: up to limit + 2 posts)."""
        return self._listing(subreddit, "hot", after=None, limit=limit)

    def _listing(self, subreddit: str, sort: str, *, after: str | None, limit: int) -> Listing:
        if not _SUBREDDIT_NAME.match(subreddit):
            raise RedditError(f"invalid subreddit name {subreddit[:40]!r}")
        # `after` goes first so a test can tell a first page from a later one by the query alone.
        params: dict[str, str | int] = {"after": after} if after else {}
        params.update(limit=min(max(limit, 1), PAGE_LIMIT), raw_json=1)
        what = f"r/{subreddit}/{sort}"
        started = time.monotonic()
        body = self._get_json(f"/r/{subreddit}/{sort}", params, subreddit=subreddit, what=what)
        listing = parse_listing(body, subreddit=subreddit, what=what)
        log.info("page_fetched", subreddit=subreddit, listing=sort, after=after, posts=len(listing.posts),
                 skipped=len(listing.skipped), next_after=listing.after, http_status=200,
                 duration_ms=logs.elapsed_ms(started), ratelimit_remaining=self.ratelimit_remaining)
        return listing

    # --- one request, with retries ---------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, str | int], *, subreddit: str, what: str) -> Any:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: _log_retry(state, subreddit, what),
            reraise=True,
        )
        try:
            return retrying(self._get_json_once, path, params, subreddit=subreddit, what=what)
        except _Retryable as exc:
            raise RedditUnavailable(f"{what}: gave up after {self.max_attempts} attempts, last: {exc}") from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.max_wait_s)
        return self._backoff(state)

    def _get_json_once(self, path: str, params: dict[str, str | int], *, subreddit: str, what: str) -> Any:
        if self.uses_oauth:
            url = self.api_url + path
            response = self._send("GET", url, what, params=params, headers=self._bearer())
            if response.status_code == 401:
                # The token expired or was revoked early: renew it once, then trust the answer.
                self._token = None
                response = self._send("GET", url, what, params=params, headers=self._bearer())
        else:
            response = self._send("GET", self.www_url + path + ".json", what, params=params)
        return self._decode(response, subreddit=subreddit, what=what)

    def _send(self, method: str, url: str, what: str, *, metered: bool = True, **kwargs: Any) -> requests.Response:
        if metered:
            if self.limiter is not None:
                self.limiter.acquire()
            else:
                self._pace()
        self.requests_made += 1
        try:
            response = self._session.request(method, url, timeout=self.timeout_s, allow_redirects=False, **kwargs)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retryable(f"{type(exc).__name__} from {_host(url)}") from None
        except requests.RequestException as exc:
            raise RedditError(f"{what}: request to {_host(url)} failed: {type(exc).__name__}") from None
        reported = self._note_ratelimit(response.headers) if metered else None
        retry_after = self._retry_after(response) if response.status_code == 429 else None
        if metered and self.limiter is not None:  # what one worker learns, every worker acts on
            self.limiter.observe(*(reported or (None, None)), retry_after_s=retry_after)
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(f"HTTP {response.status_code}{_html_note(response)}", retry_after)
        return response

    # --- decoding --------------------------------------------------------------------------------

    def _decode(self, response: requests.Response, *, subreddit: str, what: str) -> Any:
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            if "/subreddits/search" in location:
                reason = "nonexistent or banned"
            elif "login" in location:
                reason = "private"
            else:
                reason = "redirected"
            target = urlsplit(location).path or "?"
            raise SubredditUnavailable(subreddit, reason, f"HTTP {status} redirect to {target}")
        if status == 401:
            if self.uses_oauth:
                raise RedditAuthError(f"{what}: HTTP 401 twice with a fresh token; Reddit rejects our OAuth token")
            raise RedditAuthError(
                f"{what}: HTTP 401 Unauthorized; set REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET to use OAuth"
            )
        if status in (403, 404):
            if _is_html(response):
                raise RedditResponseError(
                    f"{what}: HTTP {status} with an HTML page instead of JSON ({_html_title(response)}); "
                    "Reddit blocks unauthenticated or unidentified clients this way: use OAuth credentials"
                )
            body = _json_or_none(response)
            reason = body.get("reason") if isinstance(body, dict) else None
            if status == 403 and response.headers.get("www-authenticate"):
                raise RedditAuthError(f"{what}: HTTP 403, the OAuth token lacks access (insufficient scope)")
            if isinstance(reason, str) and reason:
                raise SubredditUnavailable(subreddit, reason[:40], f"HTTP {status}")
            raise SubredditUnavailable(subreddit, "forbidden" if status == 403 else "not found", f"HTTP {status}")
        if status != 200:
            raise RedditResponseError(f"{what}: unexpected HTTP {status}{_html_note(response)}")
        if _is_html(response):
            raise RedditResponseError(
                f"{what}: HTTP 200 with an HTML page instead of JSON ({_html_title(response)})"
            )
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise RedditResponseError(
                f"{what}: malformed or truncated JSON ({len(response.content)} bytes, {type(exc).__name__})"
            ) from None

    # --- OAuth -----------------------------------------------------------------------------------

    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"bearer {self._access_token()}"}

    def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_refresh_at:
            return self._token
        self._token = None
        if not (self._client_id and self._client_secret):
            missing = "REDDIT_CLIENT_SECRET" if self._client_id else "REDDIT_CLIENT_ID"
            raise RedditAuthError(f"OAuth needs both REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET; {missing} is unset")
        what = "token request"
        asked_at = time.monotonic()
        self.token_requests += 1
        response = self._send(
            "POST",
            self.www_url + TOKEN_PATH,
            what,
            metered=False,
            data={"grant_type": "client_credentials"},
            auth=(self._client_id, self._client_secret),
        )
        status = response.status_code
        body = _json_or_none(response)
        error = body.get("error") if isinstance(body, dict) else None
        if status in (400, 401, 403) or (status == 200 and error is not None):
            detail = f"error {str(error)[:60]!r}" if error is not None else "no error body"
            raise RedditAuthError(
                f"Reddit rejected the OAuth client credentials (token endpoint answered HTTP {status}, {detail}; "
                "Reddit reports wrong credentials even with HTTP 200 and an error body): "
                "check REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET"
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str) or not token:
            raise RedditResponseError(
                f"{what}: HTTP {status} without an access token{_html_note(response)}"
            )
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 3600.0
        # Renew a little before Reddit's expiry (prawcore renews up to 10 s late and eats a 401).
        self._token_refresh_at = asked_at + lifetime - min(60.0, lifetime * 0.1)
        self._token = token
        return token

    # --- rate limits -----------------------------------------------------------------------------

    def _note_ratelimit(self, headers: Any) -> tuple[float, float] | None:
        """Read x-ratelimit-* (absent on cached answers) and decide when the next request may go.
        Returns (remaining, reset seconds) when the headers were there.

        As prawcore does: with budget left, wait only if we are ahead of an even pace over the
        window (at most 10 s); with none left, wait for the window to reset.
        """
        try:
            remaining = float(headers["x-ratelimit-remaining"])
            used = float(headers["x-ratelimit-used"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, TypeError, ValueError):
            return None
        self.ratelimit_remaining, self.ratelimit_used, self.ratelimit_reset_s = remaining, used, reset
        if remaining <= 0:
            delay = max(reset, 1.0)
        elif used + remaining <= 0:
            delay = 0.0
        else:
            on_pace_at = RATELIMIT_WINDOW_S * used / (used + remaining)
            elapsed = RATELIMIT_WINDOW_S - reset
            delay = min(max(on_pace_at - elapsed, 0.0), min(reset, MAX_PACING_SLEEP_S))
        self._next_request_at = time.monotonic() + delay
        return remaining, reset

    def _pace(self) -> None:
        delay = min(self._next_request_at - time.monotonic(), self.max_wait_s)
        if delay > 0:
            time.sleep(delay)

    def _retry_after(self, response: requests.Response) -> float | None:
        for header in ("retry-after", "x-ratelimit-reset"):
            try:
                return float(response.headers[header])
            except (KeyError, ValueError):
                continue
        return None


def parse_listing(body: Any, *, subreddit: str, what: str) -> Listing:
    """A Listing of t3 children; anything else is an error, never "zero posts"."""
    if not isinstance(body, dict) or body.get("kind") != "Listing" or not isinstance(body.get("data"), dict):
        raise RedditResponseError(f"{what}: answer is not a Listing ({_describe_shape(body)})")
    data = body["data"]
    children = data.get("children")
    if not isinstance(children, list):
        raise RedditResponseError(f"{what}: Listing without a children list ({type(children).__name__})")
    after = data.get("after")
    if after is not None and not isinstance(after, str):
        raise RedditResponseError(f"{what}: Listing `after` is {type(after).__name__}, expected a string or null")
    posts: list[Post] = []
    skipped: list[str] = []
    for index, child in enumerate(children):
        try:
            posts.append(parse_post(child, subreddit=subreddit))
        except MalformedPost as exc:
            skipped.append(f"child {index}: {exc}")
    if skipped:
        log.warning("listing_children_skipped", subreddit=subreddit, what=what, skipped=len(skipped),
                    sample="; ".join(skipped[:3]))
    return Listing(posts=posts, after=after or None, skipped=skipped)


def _log_retry(state: tenacity.RetryCallState, subreddit: str, what: str) -> None:
    reason = str(state.outcome.exception()) if state.outcome else "unknown"
    status = re.match(r"HTTP (\d{3})", reason)
    log.warning("request_retry_scheduled", subreddit=subreddit, what=what, attempt=state.attempt_number,
                http_status=int(status.group(1)) if status else None, reason=reason,
                wait_s=round(state.upcoming_sleep, 3))


def _describe_shape(body: Any) -> str:
    if isinstance(body, dict):
        if "error" in body:
            return f"error body {str(body.get('error'))[:40]!r}"
        kind = body.get("kind")
        return f"object of kind {str(kind)[:40]!r}" if kind is not None else f"object with keys {sorted(body)[:5]}"
    return f"JSON {type(body).__name__}"


def _host(url: str) -> str:
    return urlsplit(url).netloc or url[:60]


def _is_html(response: requests.Response) -> bool:
    if "html" in response.headers.get("Content-Type", "").lower():
        return True
    return response.content[:100].lstrip().lower().startswith((b"<!doctype", b"<html"))


def _html_title(response: requests.Response) -> str:
    match = re.search(rb"<title>(.{0,80}?)</title>", response.content[:4000], re.IGNORECASE | re.DOTALL)
    title = match.group(1).decode("utf-8", "replace").strip() if match else ""
    return f"title {title!r}" if title else "no title"


def _html_note(response: requests.Response) -> str:
    return f", HTML page {_html_title(response)}" if _is_html(response) else ""


def _json_or_none(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None
