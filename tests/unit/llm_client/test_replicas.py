"""The replica choice of llm.replicas: least outstanding, conversation affinity, health."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from llm.replicas import ReplicaPool, affinity_key

URLS = ["http://a:8001/v1", "http://b:8001/v1", "http://c:8001/v1"]


def urls_of(pool: ReplicaPool, *keys: str | None) -> list[str]:
    return [pool.choose(key).url for key in keys]


def test_new_conversations_go_to_the_replica_with_fewest_requests_in_flight():
    pool = ReplicaPool(URLS)
    a, b, c = pool.replicas
    with ExitStack() as held:
        for replica, busy in ((a, 3), (b, 1), (c, 2)):
            for _ in range(busy):
                held.enter_context(pool.lease(replica))
        assert [r.outstanding for r in pool.replicas] == [3, 1, 2]
        assert pool.choose("conversation:1") is b
        held.enter_context(pool.lease(b))
        held.enter_context(pool.lease(b))  # b now has 3, c has 2
        assert pool.choose("conversation:2") is c
    assert [r.outstanding for r in pool.replicas] == [0, 0, 0]
    assert [r.requests for r in pool.replicas] == [3, 3, 2]


def test_idle_replicas_share_new_conversations():
    pool = ReplicaPool(URLS)
    assert set(urls_of(pool, *(f"k{i}" for i in range(3)))) == {r.url for r in pool.replicas}


def test_a_conversation_stays_on_its_replica_even_when_it_is_busier():
    pool = ReplicaPool(URLS[:2])
    home = pool.choose("conversation:x")
    with pool.lease(home), pool.lease(home):
        assert pool.choose("conversation:x") is home
        assert pool.choose("conversation:y") is not home  # a new one goes to the idle replica


def test_a_conversation_moves_when_its_replica_goes_down_and_stays_where_it_moved():
    pool = ReplicaPool(URLS[:2])
    home = pool.choose("conversation:x")
    other = next(r for r in pool.replicas if r is not home)
    pool.mark_down(home, "connection refused")
    assert pool.choose("conversation:x") is other
    pool.mark_up(home)
    assert pool.choose("conversation:x") is other  # other holds its prefix cache now


def test_a_down_replica_gets_nothing_while_another_is_up_then_resumes():
    pool = ReplicaPool(URLS[:2])
    a, b = pool.replicas
    pool.mark_down(a, "health check answered 503")
    assert urls_of(pool, None, "k1", "k2", None) == [b.url] * 4
    assert (a.up, a.error, a.failures) == (False, "health check answered 503", 1)
    pool.mark_down(a, "still down")
    assert a.failures == 1  # counted once per outage
    pool.mark_up(a)
    assert a.up and a.error is None
    assert a.url in urls_of(pool, None, None)


def test_when_every_replica_is_down_requests_still_go_out():
    """Health can lag a recovery; the client's retries and breaker decide then."""
    pool = ReplicaPool(URLS[:2])
    a, b = pool.replicas
    pool.mark_down(a, "refused")
    pool.mark_down(b, "refused")
    assert not pool.any_up()
    with pool.lease(a):
        assert pool.choose("conversation:x") is b
    assert pool.choose("conversation:x") in (a, b)


def test_avoid_skips_the_replicas_that_just_failed_the_request():
    pool = ReplicaPool(URLS)
    a, b, c = pool.replicas
    assert pool.choose(None, avoid=[a, b]) is c
    pool.mark_down(c, "reset")
    assert pool.choose(None, avoid=[a]) is b
    assert pool.any_up(avoid=[a]) and not pool.any_up(avoid=[a, b])
    assert pool.choose(None, avoid=[a, b, c]) in (a, b, c)  # nothing left: anyone


def test_affinity_forgets_the_least_recently_used_conversations():
    pool = ReplicaPool(URLS[:2], capacity=2)
    first = pool.choose("k1")
    pool.choose("k2")
    pool.choose("k3")  # k1 forgotten
    with pool.lease(first), pool.lease(first):
        assert pool.choose("k1") is not first


def test_snapshot_describes_every_replica():
    pool = ReplicaPool([URLS[0] + "/", URLS[1]])
    pool.mark_down(pool.replicas[1], "timeout")
    assert pool.snapshot() == [
        {"url": URLS[0], "up": True, "outstanding": 0, "requests": 0, "failures": 0},
        {
            "url": URLS[1],
            "up": False,
            "outstanding": 0,
            "requests": 0,
            "failures": 1,
            "error": "timeout",
        },
    ]


def test_bad_replica_lists_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        ReplicaPool([])
    with pytest.raises(ValueError, match="repeat"):
        ReplicaPool([URLS[0], URLS[0] + "/"])


def test_affinity_key_is_the_conversation_or_the_leading_messages():
    system = {"role": "system", "content": "answer from the sources"}
    turn_1 = [system, {"role": "user", "content": "q1"}]
    turn_2 = [*turn_1, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    other = [system, {"role": "user", "content": "another question"}]
    assert affinity_key(turn_1, "c-1") == affinity_key(other, "c-1") == "conversation:c-1"
    assert affinity_key(turn_1) == affinity_key(turn_2) != affinity_key(other)
