"""Handle calls that survive a replica's death: resent, a bounded number of times within a bounded time.

Through a DeploymentHandle, a replica whose process died mid-request raises ActorDiedError, and one the router
cannot reach raises ActorUnavailableError (both RayActorError). Serve itself resends only requests the replica
never accepted; the ingress resends the rest, because every call it makes (encode, sample, ground) is a pure
read of loaded artifacts, safe to run twice. With one replica, the resent call waits in Serve's router until the
replacement is running. Anything else (a RayTaskError from the deployment's own code, a bad input) is never
resent. When the attempts or the time run out the caller gets ReplicaUnavailable, which the app answers with a
503 naming the deployment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayActorError

logger = logging.getLogger("ray.serve")  # into the replica's Serve log


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # calls in all, the first included
    seconds: float = 60.0  # from the first failure: Serve notices the death (health-check period), starts another
    backoff_s: float = 0.2  # before the first resend, doubling: lets the router hear of the death

    def __post_init__(self):
        if self.attempts < 1 or self.seconds <= 0 or self.backoff_s < 0:
            raise ValueError(f"retry policy needs attempts >= 1, seconds > 0, backoff_s >= 0; got {self}")


class ReplicaUnavailable(Exception):
    def __init__(self, deployment: str, attempts: int, seconds: float, cause: BaseException | None):
        self.deployment, self.attempts, self.seconds = deployment, attempts, seconds
        why = f"; last error: {type(cause).__name__}" if cause is not None else ""
        super().__init__(f"deployment {deployment!r} unavailable: its replica died or cannot be reached, and "
                         f"{attempts} attempt(s) over {seconds:.1f} s found no replacement answering{why}")


async def call_with_retries(deployment: str, call: Callable[[], Awaitable[Any]], policy: RetryPolicy) -> Any:
    """await call(); on a dead or unreachable replica, call() again while attempts and time remain."""
    first_failure: float | None = None
    cause: BaseException | None = None
    attempt = 0
    while attempt < policy.attempts:
        attempt += 1
        scope = None
        try:
            if first_failure is None:  # a healthy replica's call is not timed: slow is not dead
                return await call()
            scope = asyncio.timeout(max(first_failure + policy.seconds - time.monotonic(), 0.0))
            async with scope:
                return await call()
        except RayActorError as e:
            cause = e
        except TimeoutError:
            if scope is None or not scope.expired():  # not our deadline: the call's own error, passed on
                raise
            break  # the time ran out while the resent call waited for a replica
        now = time.monotonic()
        first_failure = now if first_failure is None else first_failure
        pause = policy.backoff_s * 2 ** (attempt - 1)
        if attempt >= policy.attempts or now + pause >= first_failure + policy.seconds:
            break
        logger.warning(f"call to {deployment} failed ({type(cause).__name__}), attempt {attempt} of "
                       f"{policy.attempts}; resending in {pause:.1f} s")
        await asyncio.sleep(pause)
    spent = 0.0 if first_failure is None else time.monotonic() - first_failure
    raise ReplicaUnavailable(deployment, attempt, spent, cause)
