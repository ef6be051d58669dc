"""Per-client rate limits (GCRA), shared across replicas in Redis, in-process without it.

GCRA keeps one number per client, the theoretical arrival time (TAT) of its next request: each
request moves it on by one emission interval, and a request is refused while the TAT is more
than the burst tolerance ahead of now. In Redis that is one Lua script run atomically, with the
server's clock, so replicas never disagree about time. If Redis fails or is slow, limits fall
back to this process's own bucket for a few seconds (logged once), and the API keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

# KEYS[1]: the client's bucket. ARGV: emission interval and tolerance, in microseconds.
# Returns 0 when allowed, else the microseconds to wait.
GCRA_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return math.ceil(wait) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""

_FALLBACK_S = 5.0  # after a Redis failure, skip it for this long before trying again


class LocalLimiter:
    """GCRA in this process: exact for one replica, per replica with several."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def wait_s(self, key: str, *, rate_per_s: float, burst: int) -> float:
        """0 when a request may go now (and count it), else seconds until it may."""
        now = self._clock()
        interval = 1.0 / rate_per_s
        tat = max(self._tat.get(key, now), now)
        wait = tat - now - interval * (burst - 1)
        if wait > 0:
            return wait
        self._tat[key] = tat + interval
        if len(self._tat) > 100_000:  # clients idle for longer than their burst are full anyway
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return 0.0


class RateLimiter:
    """Redis-backed limits with an in-process fallback."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        redis: Redis | None = None,
        prefix: str = "cvm:rl:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.redis = redis
        self._prefix = prefix
        self._script: Any = redis.register_script(GCRA_LUA) if redis is not None else None
        self._local = LocalLimiter(clock)
        self._clock = clock
        self._redis_down_until = 0.0
        self.log = structlog.get_logger("cvm.security")

    @property
    def shared(self) -> bool:
        """Whether limits are currently shared through Redis."""
        return self.redis is not None and self._clock() >= self._redis_down_until

    async def wait_s(self, client_id: str, rate_per_s: float | None = None) -> float:
        """0 when the client may make a request now (and count it), else seconds to wait."""
        rate = rate_per_s or self.rate_per_s
        if self._script is not None and self._clock() >= self._redis_down_until:
            interval_us = 1_000_000 / rate
            try:
                wait_us = await self._script(
                    keys=[self._prefix + client_id],
                    args=[interval_us, interval_us * (self.burst - 1)],
                )
            except (RedisError, OSError, TimeoutError) as error:
                # Logged at most once per fallback period while Redis stays down.
                self.log.warning(
                    "rate_limit_fallback",
                    reason=type(error).__name__,
                    retry_in_s=_FALLBACK_S,
                    detail="Redis unavailable: limits are per replica until it is back",
                )
                self._redis_down_until = self._clock() + _FALLBACK_S
            else:
                if self._redis_down_until:
                    self.log.info("rate_limit_shared_again")
                    self._redis_down_until = 0.0
                return int(wait_us) / 1_000_000
        return self._local.wait_s(client_id, rate_per_s=rate, burst=self.burst)

    async def close(self) -> None:
        """Close the Redis connections."""
        if self.redis is not None:
            await self.redis.aclose()
