"""Artifact identity, manifests and stores. Imports neither `tasks` nor `flows`."""
