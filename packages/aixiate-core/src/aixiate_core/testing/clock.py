"""A clock for code that takes one (``clock=``, or a module's ``time``): it stands still
until the test moves it, so expiry, backoff and locks elapse without sleeping."""

import time


class FakeClock:
    """Seconds that move only by :meth:`advance`; by default they start at the wall clock,
    so stamps a store or a database compares with real ones still make sense.

    Call it where a ``Callable[[], float]`` is wanted; put it where a module's ``time`` is
    (``monkeypatch.setattr(module, "time", clock)``) when that module reads ``monotonic()``
    or ``time()``.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
