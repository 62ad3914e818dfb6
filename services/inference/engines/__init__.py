"""Engines, one module each, chosen by the `engine` field of a model's entry in the models file."""

from __future__ import annotations

from services.inference.engines.base import Engine, EngineDead, EngineError, Generation
from shared.catalog.models import DummyOptions, ModelConfig, OpenAIOptions, TransformersOptions, VllmOptions


def create_engine(model: ModelConfig) -> Engine:
    options = model.engine_options()
    if model.engine == "dummy":
        from services.inference.engines.dummy import DummyEngine

        assert isinstance(options, DummyOptions)
        return DummyEngine(options)
    if model.engine == "transformers":
        from services.inference.engines.transformers_engine import TransformersEngine

        assert isinstance(options, TransformersOptions)
        return TransformersEngine(options)
    if model.engine == "openai":
        from services.inference.engines.openai_engine import OpenAIEngine

        assert isinstance(options, OpenAIOptions)
        return OpenAIEngine(options, model.name)
    if model.engine == "vllm":
        from services.inference.engines.vllm_engine import VllmEngine

        assert isinstance(options, VllmOptions)
        return VllmEngine(options)
    raise ValueError(f"model {model.name!r}: engine {model.engine!r} is not available")


__all__ = ["Engine", "EngineDead", "EngineError", "Generation", "create_engine"]
