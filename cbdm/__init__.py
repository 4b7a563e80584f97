"""cbdm: a reproducibility benchmark suite for class-imbalanced diffusion models."""

__version__ = "0.1.0"
