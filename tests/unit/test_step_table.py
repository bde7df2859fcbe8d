"""The table of steps: built once, with the app; every active phase has exactly one owner."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from bot.app import Runtime, build_runtime
from bot.config import load_settings
from bot.steps.consent.step import ConsentDesk
from bot.steps.mailflow.step import MailFlowDesk
from bot.steps.protocol import StepTable
from bot.steps.role.step import RoleStep
from bot.steps.verify.step import VerificationJob
from bot.workflow import TERMINAL, WORKING, Phase
from tests.conftest import base_environment


def no_listeners(
    runtime: Runtime, *, sweep_interval_seconds: float | None, orphan_check_seconds: float | None
) -> Starlette:
    return Starlette()


async def test_the_app_builds_one_table_of_the_four_steps() -> None:
    runtime = build_runtime(load_settings(base_environment()), wire=no_listeners)
    try:
        table = runtime.provisioner.steps
        owners = {phase: type(table.owner(phase)) for phase in Phase if phase not in TERMINAL}
        assert owners == {
            Phase.STARTED: ConsentDesk,
            Phase.MAILFLOW_CONSENTED: RoleStep,
            Phase.ROLE_REQUESTED: RoleStep,
            Phase.ROLE_ACKNOWLEDGED: RoleStep,
            Phase.ROLE_ASSIGNING: RoleStep,
            Phase.ROLE_ASSIGNED: ConsentDesk,
            Phase.DIRECTORY_CONSENTED: VerificationJob,
            Phase.VERIFYING: VerificationJob,
            Phase.PLAN_SHOWN: MailFlowDesk,
            Phase.APPLYING: MailFlowDesk,
            Phase.FAILED: MailFlowDesk,
        }
        assert all(table.owner(phase) is None for phase in TERMINAL)
        # The jobs of the working phases (and the recovery of an assignment whose process
        # died), and who answers each kind of Microsoft redirect.
        assert set(table.jobs) == WORKING | {Phase.ROLE_ASSIGNING}
        assert {purpose: type(h) for purpose, h in table.returns.items()} == {
            "mailflow": ConsentDesk,
            "dirsync": ConsentDesk,
            "role": RoleStep,
        }
        # The listeners reach the same step objects the table prompts through.
        assert runtime.role_step is table.find(RoleStep)
        assert runtime.consents is table.find(ConsentDesk)
        assert runtime.mailflow is table.find(MailFlowDesk)
    finally:
        await runtime.aclose()


async def test_a_table_that_leaves_a_phase_without_a_step_is_refused() -> None:
    runtime = build_runtime(load_settings(base_environment()), wire=no_listeners)
    try:
        table = runtime.provisioner.steps
        without_verify = tuple(s for s in table.steps if not isinstance(s, VerificationJob))
        with pytest.raises(ValueError, match="each active phase once"):
            StepTable(without_verify, table.upgrade)
    finally:
        await runtime.aclose()
