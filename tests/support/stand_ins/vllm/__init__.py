"""Stand-in for the `vllm` package: the names the engine imports, enough to kill an engine."""

from vllm.engine_args import AsyncEngineArgs
from vllm.sampling_params import SamplingParams

__all__ = ["AsyncEngineArgs", "SamplingParams"]
