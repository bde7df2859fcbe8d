"""The App Home tab: the sessions the viewer can act on, with links to their threads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.access import AccessCheckFailed
from bot.views import home_view
from bot.workflow import Phase

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
        sessions = [
            session
            for session in await runtime.store.active()
            if is_admin or (is_approver and session.phase is Phase.ROLE_REQUESTED)
        ]
        links = {}
        for session in sessions:
            link = await runtime.provisioner.permalink(session)
            if link:
                links[session.id] = link
        await runtime.slack.views_publish(user_id=user_id, view=home_view(sessions, links))
