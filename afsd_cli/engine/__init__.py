"""Training and inference engines (targets, losses, trainer, inference, post-processing)."""
