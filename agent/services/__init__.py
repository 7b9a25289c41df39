"""Supervised services (dockerd and others): specs, the supervisor engine, presets."""
