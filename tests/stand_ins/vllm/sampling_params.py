import enum


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    """Records its arguments; max_tokens defaults to 16, as vLLM's does."""

    def __init__(self, *, max_tokens: int = 16, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 stop=None, seed=None, output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE) -> None:
        self.max_tokens = max_tokens
        self.n = n
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop
        self.seed = seed
        self.output_kind = output_kind
