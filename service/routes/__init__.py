"""Routers, one per resource: health, metrics, models, predict."""
