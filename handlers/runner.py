"""Slack gets its answer the moment a listener acks.

Bolt's listener runner (``process_before_response=False``) starts the listener in its own task
and then looks for the ack every 10 ms (``asyncio.sleep(0.01)``), so every answer to Slack waits
at least 10 ms and every request in flight wakes the event loop a hundred times a second. Under
load those wake-ups and the 10 ms floor are most of the ack's latency.

``PromptAckRunner`` is the same runner with the polling replaced by a wait on the ack itself
(``TrackedAck.when_given``): the HTTP answer leaves as soon as the listener acks, fails or
returns without acking, or its ack deadline passes. Everything else (lazy listeners, process
before response, requests without our ``TrackedAck``) is Bolt's own code path. The listener's
failures go to the same error handler, with Bolt's rule: before the ack, Slack is answered 500;
after it, the error handler alone hears of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.listener.async_listener import AsyncListener
from slack_bolt.listener.asyncio_runner import AsyncioListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.middleware import ListenerStopped, TrackedAck

__all__ = ["PromptAckRunner", "install"]

logger = logging.getLogger(__name__)


class PromptAckRunner(AsyncioListenerRunner):
    """Bolt's asyncio listener runner, answering Slack when the ack is given, not at the next
    10 ms poll after it."""

    @classmethod
    def replacing(cls, runner: AsyncioListenerRunner) -> PromptAckRunner:
        """A prompt runner with ``runner``'s settings and handlers."""
        return cls(
            logger=runner.logger,
            process_before_response=runner.process_before_response,
            listener_error_handler=runner.listener_error_handler,
            listener_start_handler=runner.listener_start_handler,
            listener_completion_handler=runner.listener_completion_handler,
            lazy_listener_runner=runner.lazy_listener_runner,
        )

    async def run(
        self,
        request: AsyncBoltRequest,
        response: BoltResponse,
        listener_name: str,
        listener: AsyncListener,
        starting_time: float | None = None,
    ) -> BoltResponse | None:
        ack = request.context.ack
        if (
            self.process_before_response
            or request.lazy_only
            or listener.lazy_functions
            or not isinstance(ack, TrackedAck)
        ):
            return await super().run(request, response, listener_name, listener, starting_time)
        started = starting_time if starting_time is not None else time.time()
        if listener.auto_acknowledgement:
            await ack()
        if ack.answered_at_door:
            # Slack has its answer (handlers.door): the listener runs here, in the task that
            # holds the request's work slot, until it ends.
            await self._listen(request, response, listener, ack)
            return ack.response
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        listening = asyncio.ensure_future(self._listen(request, response, listener, ack))
        listening.add_done_callback(lambda _: _settle(answered))
        ack.when_given(answered)
        deadline = loop.call_later(
            max(0.0, listener.ack_timeout - (time.time() - started)), _settle, answered
        )
        try:
            await answered
        finally:
            deadline.cancel()
        if ack.response is None:
            logger.warning("%s did not ack within %d s", listener_name, listener.ack_timeout)
            return None
        return response if response is not None else ack.response

    async def _listen(
        self,
        request: AsyncBoltRequest,
        response: BoltResponse | None,
        listener: AsyncListener,
        ack: TrackedAck,
    ) -> None:
        try:
            await self.listener_start_handler.handle(request=request, response=response)
            await listener.run_ack_function(request=request, response=response)  # type: ignore[arg-type]
        except ListenerStopped:
            pass  # refused after its ack by a check that told the user (handlers.access)
        except Exception as error:  # noqa: BLE001 - Bolt's rule: every listener failure goes to the error handler
            # Not yet acked: Slack is told the request failed. Acked: what Slack was told
            # stands, and only the error handler hears of it (it tells the user).
            failure = BoltResponse(status=500) if ack.response is None else None
            await self.listener_error_handler.handle(
                error=error,
                request=request,
                response=failure,
            )
            if failure is not None:
                ack.response = failure
        finally:
            await self.listener_completion_handler.handle(request=request, response=response)


def _settle(answered: asyncio.Future[Any]) -> None:
    if not answered.done():
        answered.set_result(None)


def install(bolt: AsyncApp) -> PromptAckRunner:
    """Make ``bolt`` answer Slack as soon as a listener acks. Before ``bolt.error``: Bolt gives
    the error handler to the runner it holds then."""
    runner = PromptAckRunner.replacing(bolt.listener_runner)
    # Bolt exposes its runner read-only and has no setting for another one.
    bolt._async_listener_runner = runner
    return runner
