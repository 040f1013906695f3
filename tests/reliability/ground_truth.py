"""The end of every reliability scenario: compare what the fake Reddit listed with what the fake
Amplitude stored.

The promise: every post the fake Reddit ever listed is stored at the fake Amplitude exactly once,
under the one insert_id events.insert_id_for(post_id). The one excuse is the caveat of
FakeReddit.ever_listed: it holds what the fake began to send, including answers of polls that then
failed (a later page broke, the client timed out); a post deleted or removed after such an answer
and before any successful poll could see it was never recordable. Those are "excused" only if they
are not live now and not recorded; they are counted and printed, never silently dropped.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.events import insert_id_for
from reddit_dagster.schema import event_outbox, posts
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit


@dataclass
class GroundTruth:
    listed: int
    stored: int
    excused: list[str]
    deduped: int  # resends Amplitude answered 200 without storing (killed or unacknowledged sends)
    dead_letters: dict[str, str] = field(default_factory=dict)  # insert_id -> last_error
    amplitude_requests: int = 0
    fault_requests: int = 0  # Amplitude requests answered with an injected fault

    def summary(self, label: str) -> str:
        return (
            f"ground truth [{label}]: {self.listed} posts listed by the fake Reddit, {self.stored} stored at the "
            f"fake Amplitude exactly once each; {len(self.excused)} excused (deleted before any successful poll); "
            f"{self.deduped} deduped resends; {len(self.dead_letters)} dead letters; "
            f"{self.amplitude_requests} Amplitude requests ({self.fault_requests} faulted)"
        )


def check_ground_truth(engine: Engine, reddit: FakeReddit, amplitude: FakeAmplitude, label: str,
                       allowed_dead: frozenset[str] = frozenset()) -> GroundTruth:
    """Assert the promise held; print and return the figures."""
    state = reddit.state()
    listed = set(state["ever_listed"])
    live = {post_id for ids in state["posts"].values() for post_id in ids}
    with engine.connect() as conn:
        recorded = set(conn.scalars(sa.select(posts.c.id)))
        rows = conn.execute(sa.select(event_outbox.c.insert_id, event_outbox.c.post_id, event_outbox.c.status,
                                      event_outbox.c.payload, event_outbox.c.last_error)).all()
    excused = sorted(listed - live - recorded)
    expected = listed - set(excused)

    missing = sorted(expected - recorded)
    assert not missing, f"{len(missing)} listed posts were never recorded, e.g. {missing[:5]}"
    assert recorded <= listed, f"recorded posts the fake never listed: {sorted(recorded - listed)[:5]}"
    by_status = collections.Counter(row.status for row in rows)
    assert by_status["pending"] == 0, f"{by_status['pending']} events still pending"
    assert {row.post_id for row in rows} == recorded, "a recorded post without exactly one outbox row"
    assert all(row.insert_id == insert_id_for(row.post_id) for row in rows), "an outbox row with a foreign insert_id"
    dead = {row.insert_id: row.last_error for row in rows if row.status == "dead"}
    assert set(dead) <= allowed_dead, f"unexpected dead letters: {dead}"

    counts = amplitude.count_by_insert_id()
    twice = {insert_id: n for insert_id, n in counts.items() if n != 1}
    assert not twice, f"stored more than once: {dict(list(twice.items())[:5])}"
    should_be_stored = {insert_id_for(post_id) for post_id in expected} - set(dead)
    assert set(counts) == should_be_stored, (
        f"stored set differs: {len(should_be_stored - set(counts))} missing, e.g. "
        f"{sorted(should_be_stored - set(counts))[:5]}; {len(set(counts) - should_be_stored)} unexpected"
    )
    insert_ids_by_post: dict[str, set[str]] = collections.defaultdict(set)
    frozen = {row.insert_id: row.payload for row in rows}
    for event in amplitude.stored_events():
        insert_ids_by_post[event["event_properties"]["post_id"]].add(event["insert_id"])
        # What Amplitude keeps is the frozen event, field for field (the SDK adds only its library tag).
        assert {k: v for k, v in event.items() if k != "library"} == frozen[event["insert_id"]]
    assert all(len(ids) == 1 for ids in insert_ids_by_post.values()), "a post stored under two insert_ids"
    assert {row.insert_id for row in rows if row.status == "sent"} == set(counts), "outbox 'sent' differs from stored"

    truth = GroundTruth(
        listed=len(listed),
        stored=len(counts),
        excused=excused,
        deduped=amplitude.deduped,
        dead_letters=dead,
        amplitude_requests=len(amplitude.requests_log),
        fault_requests=sum(1 for entry in amplitude.requests_log if entry["fault"]),
    )
    print(truth.summary(label), flush=True)
    for insert_id, error in dead.items():
        print(f"  dead letter {insert_id}: {error}", flush=True)
    if excused:
        print(f"  excused: {', '.join(excused[:20])}", flush=True)
    return truth
