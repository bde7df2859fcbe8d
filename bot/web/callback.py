"""``/microsoft/callback``: every redirect from Microsoft comes back here (consents as GET,
the role-assignment sign-in as a form POST). The single-use ``state`` says which session and
what for; the checks every redirect shares are made here, then the step's own handler answers.

When Redis does not answer, the browser gets a page saying so (503), never a bare error: the
link still works if its state was not taken yet (reload the page), else the thread's New link.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.session.service import Provisioner
from bot.steps.protocol import ReturnHandler
from bot.web import pages
from bot.workflow import Phase
from state.oauth import Redemption, RedemptionStatus
from state.patience import TRANSIENT, RedisUnavailable

__all__ = ["MicrosoftReturns", "ReturnHandler"]

logger = logging.getLogger(__name__)

_ENDED: Mapping[Phase, str] = {
    Phase.CANCELLED: "cancelled",
    Phase.EXPIRED: "expired",
    Phase.PROTECTED: "finished",
}


class MicrosoftReturns:
    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner
        self._handlers = provisioner.steps.returns  # OAuth state purpose → its step

    async def returned(self, params: Mapping[str, str]) -> pages.Page:
        state = params.get("state")
        if not state:
            return pages.link_missing()
        provisioner = self._provisioner
        taken = False
        try:
            redemption = await provisioner.oauth.redeem(state, now=provisioner.now())
            taken = True
            return await self._answer(redemption, params)
        except RedisUnavailable as error:
            taken = taken or error.consumed
            cause: Exception = error
        except TRANSIENT as error:
            cause = error
        logger.warning(
            "Microsoft's redirect not handled: Redis unavailable (%s); its state was %s",
            type(cause).__name__,
            "taken" if taken else "kept",
        )
        return pages.redis_unavailable(link_kept=not taken)

    async def _answer(self, redemption: Redemption, params: Mapping[str, str]) -> pages.Page:
        provisioner = self._provisioner
        binding = redemption.binding
        if binding is None or binding.purpose not in self._handlers:
            return pages.link_unknown()
        session = await provisioner.store.get(binding.session_id)
        if session is None:
            return pages.link_unknown()
        thread = await provisioner.permalink(session)
        if redemption.status is RedemptionStatus.REPLAYED:
            return pages.link_replayed(thread)
        if redemption.status is RedemptionStatus.EXPIRED:
            await provisioner.store.record(
                session.id,
                actor="system",  # the bot received it; who was at Microsoft is unknown
                action=f"{binding.purpose}_redirect",
                result="expired_link",
                detail={"clicked_by": binding.opened_by} if binding.opened_by else {},
            )
            return pages.link_expired(provisioner.oauth.lifetime // 60, thread)
        if not session.is_active:
            return pages.session_over(session.tenant_label, _ENDED[session.phase], thread)
        return await self._handlers[binding.purpose].returned(session, binding, params, thread)
