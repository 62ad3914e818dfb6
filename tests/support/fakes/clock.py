"""A clock tests set by hand, for code that takes `clock=` instead of reading time itself."""


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
