"""Exchange Online mail flow for inline protection (DESIGN §3): desired state, plan, checks, apply.

- ``desired``: what provisioning wants, from ``InlineService``, direction(s) and protected domains;
- ``snapshot``: what the tenant holds (typed), and how Exchange's echoes are compared;
- ``plan``: the ordered changes between the two (pure);
- ``preflight``: checks with pass / warning / blocking findings (pure);
- ``apply``: reading the tenant and applying the plan through the Exchange admin API;
- ``render``: Block Kit for the checklist, the plan, progress, failures and the summary.
"""
