"""Inference for any probdyn model: SVI, NUTS, evidence and model comparison."""

__all__: list[str] = []
