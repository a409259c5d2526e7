"""Deployments, schedules and presets (YAML in ``deploy/presets/``)."""
