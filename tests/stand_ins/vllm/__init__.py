"""Stand-in for the `vllm` package: the engine-facing names, recording how they are called."""

from vllm.engine_args import AsyncEngineArgs
from vllm.sampling_params import SamplingParams

__all__ = ["AsyncEngineArgs", "SamplingParams"]
