from collections import Counter

from engine.plan import Planner, quotas, stable_seed


def test_quotas_split_evenly():
    assert quotas(["a", "b", "c"], 10) == {"a": 4, "b": 3, "c": 3}
    assert sum(quotas(["a", "b"], 601).values()) == 601


def test_stable_seed_is_deterministic_and_distinct():
    assert stable_seed(0, "sport", 1) == stable_seed(0, "sport", 1)
    assert stable_seed(0, "sport", 1) != stable_seed(0, "sport", 2)
    assert stable_seed(0, "sport", 1) != stable_seed(1, "sport", 1)


def test_planner_issues_only_what_is_needed_then_waits():
    p = Planner(["a", "b"], n=4, cap=100)
    issued = []
    while (r := p.next()) is not None:
        issued.append(r)
    assert sorted(r.label for r in issued) == ["a", "a", "b", "b"]
    assert len({r.id for r in issued}) == 4
    # one request of 'a' yields nothing: the plan asks for one more 'a'
    p.record("a", kept=0)
    again = p.next()
    assert again is not None and again.label == "a"
    assert p.next() is None


def test_planner_finishes_and_respects_cap():
    p = Planner(["a"], n=2, cap=3)
    for _ in range(3):
        r = p.next()
        assert r is not None
        p.record("a", kept=0)
    assert p.exhausted and not p.finished
    assert p.next() is None


def test_resume_skips_done_ids_and_keeps_ids_deterministic():
    fresh = Planner(["a", "b"], n=6, cap=100, seed=3)
    first = [fresh.next() for _ in range(6)]
    done = {r.id for r in first[:3]}
    resumed = Planner(
        ["a", "b"],
        n=6,
        cap=100,
        seed=3,
        done=done,
        accepted=Counter(r.label for r in first[:3]),
        requests_done=Counter(r.label for r in first[:3]),
    )
    rest = []
    while (r := resumed.next()) is not None:
        rest.append(r)
    assert {r.id for r in rest} == {r.id for r in first[3:]}
    assert {r.seed for r in rest} == {r.seed for r in first[3:]}


def test_room_counts_surplus():
    p = Planner(["a"], n=1, cap=10)
    p.next()
    p.record("a", kept=1)
    assert p.room("a") == 0 and p.finished


def test_hold_keeps_a_submitted_request_in_flight_across_a_resume():
    first = Planner(["a"], n=3, cap=10)
    sent = [first.next() for _ in range(3)]
    assert [r.id for r in sent if r] == ["a-0000000", "a-0000001", "a-0000002"]
    # resumed: a-0000000 is done (journaled), a-0000001 sits in a submitted batch, a-0000002 was never sent
    p = Planner(["a"], n=3, cap=10, done={"a-0000000"}, accepted=Counter(a=1), requests_done=Counter(a=1))
    assert p.hold("a-0000001", "a") is True
    assert p.hold("a-0000000", "a") is False  # already recorded: not in flight again
    assert p.outstanding == 1 and p.issued == 2
    again = p.next()
    assert again is not None and again.id == "a-0000002"  # the held request is not planned again
    assert p.next() is None  # need 2: one held, one new
    p.record("a", kept=1)
    assert p.outstanding == 1 and p.accepted["a"] == 2
