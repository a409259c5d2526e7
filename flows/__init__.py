"""Prefect flows that compose the stages, the CLI, and the root config."""
