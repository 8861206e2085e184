"""The memo of verified access tokens: it may only spare work, never admit more."""

from uuid import uuid4

from aixiate_auth.access_tokens import AccessClaims, VerifiedTokens
from aixiate_core.testing import FakeClock

NOW = 1_800_000_000.0
LEEWAY = 30


def claims(expires_at: float = NOW + 900) -> AccessClaims:
    return AccessClaims(
        user_id=uuid4(),
        session_id=uuid4(),
        roles=frozenset(),
        token_id=uuid4().hex,
        expires_at=int(expires_at),
    )


def memo(
    max_entries: int = 10, *, keys: set[str] | None = None, clock: FakeClock | None = None
) -> VerifiedTokens:
    known = {"k1"} if keys is None else keys
    return VerifiedTokens(
        max_entries, LEEWAY, has_key=lambda kid: kid in known, clock=clock or FakeClock(NOW)
    )


def test_a_token_put_is_found() -> None:
    tokens = memo()
    remembered = claims()

    tokens.put("token-a", remembered, "k1")

    assert tokens.get("token-a") is remembered
    assert tokens.get("token-b") is None


def test_only_the_exact_token_matches() -> None:
    tokens = memo()
    tokens.put("header.payload.signature", claims(), "k1")

    assert tokens.get("header.payload.signaturf") is None
    assert tokens.get("header.payload.signature ") is None
    assert tokens.get("Header.payload.signature") is None


def test_tokens_are_not_kept_in_memory() -> None:
    tokens = memo()
    tokens.put("the-raw-token", claims(), "k1")

    assert "the-raw-token" not in repr(vars(tokens))
    assert b"the-raw-token" not in b"".join(tokens._entries)


def test_an_expired_token_is_dropped_after_the_leeway() -> None:
    clock = FakeClock(NOW)
    tokens = memo(clock=clock)
    tokens.put("token", claims(expires_at=NOW + 60), "k1")

    clock.now = NOW + 60 + LEEWAY
    assert tokens.get("token") is not None

    clock.now = NOW + 60 + LEEWAY + 1
    assert tokens.get("token") is None
    assert len(tokens) == 0


def test_a_token_whose_key_is_gone_is_dropped() -> None:
    keys = {"k1", "k2"}
    tokens = memo(keys=keys)
    tokens.put("token", claims(), "k1")

    keys.discard("k1")

    assert tokens.get("token") is None
    assert len(tokens) == 0


def test_the_memo_is_bounded_dropping_the_oldest() -> None:
    tokens = memo(max_entries=3)
    for name in ("t1", "t2", "t3", "t4"):
        tokens.put(name, claims(), "k1")

    assert len(tokens) == 3
    assert tokens.get("t1") is None
    assert all(tokens.get(name) is not None for name in ("t2", "t3", "t4"))


def test_size_zero_turns_it_off() -> None:
    tokens = memo(max_entries=0)
    tokens.put("token", claims(), "k1")

    assert tokens.get("token") is None
    assert len(tokens) == 0
