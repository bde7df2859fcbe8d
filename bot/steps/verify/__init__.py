"""Step 4, first half: the grants checked against Graph and Exchange Online.

- ``checks``: each grant checked, with the reason and the fix when it is missing;
- ``model``: waiting for role replication (polling with backoff, resumable);
- ``views``: Block Kit for the prompt, progress and the summary (pure);
- ``step``: the verification job.
"""
