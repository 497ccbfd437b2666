"""distillguard: detect, stop and document adversarial distillation of LLM APIs."""

__version__ = "0.1.0"
