"""qilin: build medical LLMs by multi-stage knowledge injection."""

__version__ = "0.1.0"
