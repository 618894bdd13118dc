"""The Redis store (``pip install rota[redis]``)."""

from rota.store.redis.store import RedisStore

__all__ = ["RedisStore"]
