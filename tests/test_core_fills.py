"""Fill tokens and single-flight bookkeeping (cacheway.core.fills), pure."""

from __future__ import annotations

from cacheway.core.fills import STRIPES, FillTokens, Flights


def test_a_write_after_a_token_was_taken_voids_it() -> None:
    tokens = FillTokens()
    token = tokens.token("ns:a")
    assert tokens.valid("ns:a", token)
    tokens.bump("ns:a")
    assert not tokens.valid("ns:a", token)
    assert tokens.valid("ns:a", tokens.token("ns:a"))


def test_tokens_of_keys_on_other_stripes_are_left_alone() -> None:
    tokens = FillTokens()
    other = next(f"ns:{i}" for i in range(10_000)
                 if FillTokens.stripe(f"ns:{i}") != FillTokens.stripe("ns:a"))
    token = tokens.token(other)
    tokens.bump("ns:a")
    assert tokens.valid(other, token)
    assert 0 <= FillTokens.stripe(other) < STRIPES


def test_readers_of_one_key_share_one_flight_until_it_lands() -> None:
    flights = Flights()
    made: list[object] = []

    def waiter() -> object:
        made.append(object())
        return made[-1]

    first, lead = flights.join("ns:a", 0, waiter)
    second, follow = flights.join("ns:a", 0, waiter)
    assert lead
    assert not follow
    assert first is second
    assert len(made) == 1
    flights.land("ns:a", first)
    third, lead_again = flights.join("ns:a", 0, waiter)
    assert lead_again
    assert third is not first


def test_a_flight_that_read_before_a_write_is_not_joined() -> None:
    flights = Flights()
    old, _ = flights.join("ns:a", 0, object)
    new, lead = flights.join("ns:a", 1, object)  # a write bumped the generation
    assert lead
    assert new is not old
    flights.land("ns:a", old)  # the old one landing does not end the new one
    again, follow = flights.join("ns:a", 1, object)
    assert again is new
    assert not follow
