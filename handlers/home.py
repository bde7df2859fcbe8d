"""The App Home tab: the sessions the viewer can act on, with links to their threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.session.access import AccessCheckFailed

if TYPE_CHECKING:
    from bot.app import Runtime


def register(runtime: Runtime) -> None:
    @runtime.bolt.event("app_home_opened")
    @runtime.inflight.track
    async def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        try:
            is_admin = await runtime.access.is_admin(user_id)
            is_approver = await runtime.access.is_approver(user_id)
        except AccessCheckFailed:
            is_admin = is_approver = False
        view = await runtime.provisioner.home(is_admin=is_admin, is_approver=is_approver)
        await runtime.slack.views_publish(user_id=user_id, view=view)
