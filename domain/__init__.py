"""Pure domain logic: vocabulary, message schemas, analysis and analytics rules.

Nothing here performs I/O or imports db/, workers/, sqlalchemy, dramatiq, redis or httpx.
"""
