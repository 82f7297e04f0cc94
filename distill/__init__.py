"""distill: knowledge distillation and model compression for PyTorch, on Lightning."""

__version__ = "0.1.0"
