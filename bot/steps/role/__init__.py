"""Step 2: the Exchange Administrator role for the mail-flow app.

- ``requirements``: what the tenant's PIM policy demands (pure).
- ``model``: the role request an admin submits in the modal, and its validation (pure).
- ``views``: Block Kit for the thread and the modal (pure).
- ``assign``: the assignment through Graph on a signed-in admin's token, the check behind
  "I've assigned it", and the delegated sign-in around them.
- ``step``: the request, the approver's decision, the assignment and their thread messages.
"""
