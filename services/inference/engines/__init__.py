"""Engines, one module each, chosen by the `engine` field of a model's entry in the models file."""

from __future__ import annotations

from services.inference.engines.base import Engine, EngineError, Generation
from shared.models_config import ModelConfig


def create_engine(model: ModelConfig) -> Engine:
    options = model.engine_options()
    if model.engine == "dummy":
        from services.inference.engines.dummy import DummyEngine

        return DummyEngine(options)
    raise ValueError(f"model {model.name!r}: engine {model.engine!r} is not available")


__all__ = ["Engine", "EngineError", "Generation", "create_engine"]
