"""Latent action policies: learn from action-free video, act with a k-shot action head."""
