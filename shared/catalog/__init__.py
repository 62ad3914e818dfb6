"""The models file and what follows from it: models, fallback chains, prices, money, spend limits, API keys."""
