"""Talking to the served model: an OpenAI-compatible chat client for the inference smoke test."""
