"""The one place the four steps are built and put in order (DESIGN §1).

========================  ==========================================  =========  =================
step                      phases it owns (it prompts on entering them)  job        Microsoft returns
========================  ==========================================  =========  =================
1, 3 ``ConsentDesk``      STARTED, ROLE_ASSIGNED                                   mailflow, dirsync
2 ``RoleStep``            MAILFLOW_CONSENTED, ROLE_REQUESTED,                      role
                          ROLE_ACKNOWLEDGED, ROLE_ASSIGNING
4 ``VerificationJob``     DIRECTORY_CONSENTED, VERIFYING              VERIFYING
4 ``MailFlowDesk``        PLAN_SHOWN, APPLYING, FAILED                APPLYING
========================  ==========================================  =========  =================

An upgrade session passes steps 1–3 through ``UpgradeSteps`` first (``StepTable.prompt``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx

from bot.microsoft.access import MicrosoftAccess
from bot.microsoft.identity import MicrosoftApp
from bot.microsoft.sealing import Sealer
from bot.session.access import AccessPolicy
from bot.session.service import Provisioner
from bot.steps.consent.confirm import confirm_with_microsoft
from bot.steps.consent.model import ConsentTargets
from bot.steps.consent.step import ConsentDesk
from bot.steps.mailflow.step import MailFlowDesk
from bot.steps.mailflow.upgrade import UpgradeSteps
from bot.steps.protocol import StepTable
from bot.steps.role.step import RoleStep, RoleStepSettings
from bot.steps.verify.step import VerificationJob

__all__ = ["StepServices", "build_steps"]


@dataclass(frozen=True)
class StepServices:
    """What the steps need from the app besides the provisioner."""

    consent: ConsentTargets
    role: RoleStepSettings
    access: AccessPolicy
    http: httpx.AsyncClient
    microsoft: MicrosoftAccess
    new_dirsync_app: Callable[[], MicrosoftApp]
    sealer: Sealer
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    verify_limit: timedelta = timedelta(minutes=30)


def build_steps(provisioner: Provisioner, services: StepServices) -> StepTable:
    """The steps of a provisioning, in order; the provisioner builds it once, at construction."""
    microsoft = services.microsoft
    return StepTable(
        steps=(
            ConsentDesk(provisioner, services.consent, confirm_with_microsoft(microsoft)),
            RoleStep(
                provisioner=provisioner,
                settings=services.role,
                access=services.access,
                http=services.http,
                new_dirsync_app=services.new_dirsync_app,
                dirsync_app=microsoft.dirsync,
                sealer=services.sealer,
            ),
            VerificationJob(
                provisioner=provisioner,
                microsoft=microsoft,
                limit=services.verify_limit,
                sleep=services.sleep,
                monotonic=services.monotonic,
            ),
            MailFlowDesk(provisioner=provisioner, microsoft=microsoft),
        ),
        upgrade=UpgradeSteps(provisioner=provisioner, microsoft=microsoft),
    )
