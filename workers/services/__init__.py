"""Application services: one use case each, one unit of work per step."""
