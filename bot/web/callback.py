"""``/microsoft/callback``: every redirect from Microsoft comes back here (consents as GET,
the role-assignment sign-in as a form POST). The single-use ``state`` says which session and
what for; the checks every redirect shares are made here, then the step's own handler answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.session.service import Provisioner
from bot.steps.protocol import ReturnHandler
from bot.web import pages
from bot.workflow import Phase
from state.oauth import RedemptionStatus

__all__ = ["MicrosoftReturns", "ReturnHandler"]

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
        redemption = await provisioner.oauth.redeem(state, now=provisioner.now())
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
