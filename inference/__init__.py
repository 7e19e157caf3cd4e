"""Inference: the temporal video model and its GPU/CPU worker. Delivered by its own issue."""
