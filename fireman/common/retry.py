"""The one retry policy for writes that wait out an outage: exponential back-off with jitter.

The sink, the scorer's InfluxDB writer and the monitor all retry a write while InfluxDB is
unavailable, each in its own way of waiting (the sink keeps polling Kafka with its partitions paused
so it stays in its group; the scorer's writer wakes early when it is closed; the monitor wakes when
told to stop). They share this policy; only ``sleep`` and ``give_up`` differ. The jitter keeps
several processes that lost InfluxDB at the same moment from retrying in lockstep when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tenacity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 10.0

    def retrying(
        self,
        retry_on: type[BaseException] | tuple[type[BaseException], ...],
        sleep: Callable[[float], object],
        give_up: Callable[[], bool] = lambda: False,
        failure: str = "write failed",
        on_retry: Callable[[BaseException], None] | None = None,
        only_if: Callable[[BaseException], bool] = lambda _error: True,
        level: int = logging.WARNING,
    ) -> tenacity.Retrying:
        """Retry ``retry_on`` (for which ``only_if`` holds) until it succeeds or ``give_up()``; then
        the last error is raised. Each retry is logged at ``level``: a warning, unless waiting is
        the expected course (then DEBUG).

        Use as ``for attempt in policy.retrying(...): with attempt: write()``.
        """
        import tenacity

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.log(level, "%s, retrying in %.1f s: %s", failure, wait, error)
            if on_retry is not None and error is not None:
                on_retry(error)

        def pause(seconds: float) -> None:
            sleep(seconds)  # e.g. Event.wait, whose result tenacity has no use for

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda error: isinstance(error, retry_on) and only_if(error)),
            wait=tenacity.wait_exponential_jitter(
                initial=self.initial_s, max=self.max_s, jitter=self.initial_s
            ),
            stop=lambda _state: give_up(),
            sleep=pause,
            before_sleep=before_sleep,
            reraise=True,
        )
