"""Step 4, second half: Exchange Online mail flow for inline protection (DESIGN §3).

- ``desired``: what provisioning wants, from ``InlineService``, direction(s) and protected domains;
- ``snapshot``: what the tenant holds (typed), and how Exchange's echoes are compared;
- ``plan``: the ordered changes between the two (pure);
- ``preflight``: checks with pass / warning / blocking findings (pure);
- ``model``: which domains are protected (pure);
- ``apply``: reading the tenant and applying the plan through the Exchange admin API;
- ``views``: Block Kit for the checklist, the plan, progress, failures, Submit and the summary;
- ``step``: showing the plan, Submit and the apply job; ``upgrade``: the upgrade scope.
"""
