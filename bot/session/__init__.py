"""A provisioning session as people see it: starting, carrying out transitions, who may act,
and the channel-level Block Kit (root checklist, thread notes, status, App Home)."""
