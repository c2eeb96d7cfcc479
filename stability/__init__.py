"""stability: measure how sensitive vision transformers are to their hyper-parameters."""

__version__ = "0.1.0"

