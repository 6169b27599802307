"""qwenvl-serve: a production front for Qwen3-VL models on vLLM."""

__version__ = "0.1.0"
