"""The injected clock the tests share: settable epoch seconds, so timeouts need no sleeping."""


class Clock:
    """A settable clock: ``clock()`` returns ``clock.t`` (seconds); ``advance`` moves it on."""

    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
