"""Who may act: ``PROVISION_ADMINS`` and ``PROVISION_APPROVERS`` hold user ids and user group ids.

User groups are expanded through ``usergroups.users.list`` and the answer is cached briefly (at
most ``MAX_CACHE_SECONDS``), so a burst of clicks costs one Slack call, and a change of membership
is seen within a minute. A ``fresh`` check asks Slack every time (and refreshes the cache): the
commitments (a modal's submission, Submit, acknowledging a role request) use it, so somebody
removed from a group a moment ago cannot commit anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["MAX_CACHE_SECONDS", "AccessCheckFailed", "AccessPolicy"]

MAX_CACHE_SECONDS = 60.0


class AccessCheckFailed(Exception):
    """Slack would not tell us who is in a user group; the caller asks the user to try again."""

    def __init__(self, group_id: str, slack_error: str) -> None:
        self.group_id = group_id
        self.slack_error = slack_error
        super().__init__(f"could not list the members of user group {group_id}: {slack_error}")


class AccessPolicy:
    """Who may act. Group members are remembered for ``cache_seconds`` on ``clock``."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        admins: Sequence[str],
        approvers: Sequence[str],
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        cache_at_most: int = 256,
    ) -> None:
        if not 0 < cache_seconds <= MAX_CACHE_SECONDS:
            raise ValueError(f"group membership is cached for at most {MAX_CACHE_SECONDS} s")
        self._client = client
        self.admins = tuple(admins)
        self.approvers = tuple(approvers)
        self._groups: TTLCache[str, frozenset[str]] = TTLCache(
            maxsize=cache_at_most, ttl=cache_seconds, timer=clock
        )

    async def is_admin(self, user_id: str, *, fresh: bool = False) -> bool:
        return await self._is_listed(user_id, self.admins, fresh=fresh)

    async def is_approver(self, user_id: str, *, fresh: bool = False) -> bool:
        return await self._is_listed(user_id, self.approvers, fresh=fresh)

    async def _is_listed(self, user_id: str, principals: Sequence[str], *, fresh: bool) -> bool:
        if user_id in principals:
            return True
        for group_id in (p for p in principals if p.startswith("S")):
            if user_id in await self._members(group_id, fresh=fresh):
                return True
        return False

    async def _members(self, group_id: str, *, fresh: bool) -> frozenset[str]:
        cached = None if fresh else self._groups.get(group_id)
        if cached is not None:
            return cached
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as error:
            raise AccessCheckFailed(group_id, str(error.response.get("error"))) from error
        members = frozenset(str(user) for user in response.get("users") or [])
        self._groups[group_id] = members  # no await between: the event loop keeps this atomic
        return members
