import enum


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    def __init__(
        self, *, max_tokens: int = 16, output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE, **kwargs
    ) -> None:
        self.max_tokens = max_tokens
        self.output_kind = output_kind

    @classmethod
    def from_optional(cls, *, max_tokens: int | None = 16, output_kind=RequestOutputKind.CUMULATIVE, **kwargs):
        return cls(max_tokens=16 if max_tokens is None else max_tokens, output_kind=output_kind)


class StructuredOutputsParams:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)
