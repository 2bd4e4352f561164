"""rlvf: post-training code LLMs with verification feedback."""

__version__ = "0.1.0"
