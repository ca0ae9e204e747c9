"""Persistence: typed models, engine and sessions, unit of work, repositories."""
