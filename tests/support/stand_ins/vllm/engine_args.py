from dataclasses import dataclass


@dataclass
class AsyncEngineArgs:
    """The fields the models file's typed vllm options fill (the real class has many more)."""

    model: str
    revision: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    quantization: str | None = None
    trust_remote_code: bool = False
