"""``/provision-inline upgrade``: outbound protection for a tenant already protected inbound.

An upgrade session walks the same four steps, but a step that is already satisfied in Microsoft
is recorded, not asked again: when an upgrade session reaches the phase of steps 1, 2 or 3, the
bot checks (``bot.verify.verify``: Graph read as the directory-sync app, where it has consent)
whether the mail-flow consent, the Exchange Administrator role or the directory-sync consent is
in place, and if so records the step as a ``system`` event with ``{"found": "existing"}``. A step
that is not satisfied is prompted as usual (``bot.steps.protocol.StepTable.prompt`` asks this
first, for upgrade sessions only). The plan then covers the
outbound objects only (``bot.steps.mailflow.step``: ``Scope.UPGRADE`` → ``Direction.OUTBOUND``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.microsoft.access import MicrosoftAccess
from bot.session.service import Provisioner
from bot.steps.mailflow.model import UpgradeFindings
from bot.steps.mailflow.views import upgrade_found_message
from bot.steps.verify.checks import verify
from bot.steps.verify.model import CheckName
from bot.workflow import Event, EventKind, Phase, Scope, Session, TransitionNotAllowed

__all__ = ["UpgradeSteps"]

logger = logging.getLogger(__name__)

#: phase → (the check that says the step is done, the event that records it, its name)
_STEPS: Mapping[Phase, tuple[CheckName, EventKind, str]] = {
    Phase.STARTED: (
        CheckName.MAILFLOW_PERMISSION,
        EventKind.MAILFLOW_CONSENT,
        "Step 1, consent for mail flow",
    ),
    Phase.MAILFLOW_CONSENTED: (
        CheckName.MAILFLOW_ROLE,
        EventKind.ROLE_FOUND,
        "Step 2, Exchange Administrator role for the mail-flow app",
    ),
    Phase.ROLE_ASSIGNED: (
        CheckName.DIRSYNC_CONSENT,
        EventKind.DIRECTORY_CONSENT,
        "Step 3, consent for directory sync",
    ),
}


class UpgradeSteps:
    def __init__(
        self,
        *,
        provisioner: Provisioner,
        microsoft: MicrosoftAccess,
    ) -> None:
        self._provisioner = provisioner
        self._microsoft = microsoft

    phases = frozenset(_STEPS)

    async def record_if_done(self, session: Session) -> bool:
        """Record the step of ``session.phase`` if Microsoft shows it done; False to ask."""
        if session.scope is not Scope.UPGRADE or session.phase not in _STEPS:
            return False
        return await self._found(session.phase, session)

    async def _check(self, session: Session) -> set[CheckName]:
        provisioner = self._provisioner
        verification = await verify(self._microsoft.context(session.tenant_id))
        passed = {check.name for check in verification.checks if check.passed}
        found = UpgradeFindings(frozenset(name.value for name in passed))
        event = Event(
            EventKind.UPGRADE_CHECKED,
            "system",
            provisioner.now(),
            {"passed": ",".join(sorted(found.passed))},
            found,
        )
        try:
            await provisioner.handle(session.id, event)
        except TransitionNotAllowed:
            logger.info("upgrade session %s moved on before its checks were kept", session.id)
        return passed

    async def _found(self, phase: Phase, session: Session) -> bool:
        """Record the step of ``phase`` if Microsoft shows it done; False to ask as usual."""
        provisioner = self._provisioner
        check, kind, title = _STEPS[phase]
        if phase is Phase.STARTED:
            passed = await self._check(session)
            found = [t for c, _, t in _STEPS.values() if c in passed]
            missing = [t for c, _, t in _STEPS.values() if c not in passed]
            await provisioner.post_in_thread(
                session, upgrade_found_message(session, found, missing)
            )
        else:
            current = await provisioner.store.get(session.id)
            stored = current.upgrade if current is not None else None
            passed = {CheckName(v) for v in stored.passed} if stored is not None else set()
            if check not in passed:
                passed = await self._check(session)  # done meanwhile? check again
        if check not in passed:
            return False
        event = Event(
            kind,
            "system",
            provisioner.now(),
            {
                "found": "existing",
                "reason": f"{title} was already in place in Microsoft (checked by the bot), "
                "so it is not asked again.",
            },
        )
        try:
            await provisioner.handle(session.id, event)
        except TransitionNotAllowed:
            logger.info("upgrade session %s moved on before %s was recorded", session.id, kind)
        return True
