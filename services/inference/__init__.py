"""Inference worker: consumes one model's stream and runs the model."""
