"""The four provisioning steps of DESIGN §1, one package each.

Every step has the same shape: ``model.py`` (its typed state and pure logic), ``views.py`` (pure
Block Kit) and ``step.py`` (what the step does: prompts, handles its events, runs its job).
"""
