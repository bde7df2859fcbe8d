"""The small HTML pages a browser sees after Microsoft redirects back to the bot. Pure.

Every page says what happened, whether anything changed, and what to do next, with a link back
to the Slack thread where there is one. Plain HTML and CSS (no script), one ``h1``, a landmark,
a live region for the outcome, readable contrast and sizes, every value escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from html import escape

__all__ = ["Page", "Tone", "render"]


class Tone(StrEnum):
    SUCCESS = "success"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Page:
    title: str
    tone: Tone
    paragraphs: tuple[str, ...]
    thread_url: str | None = None
    status: int = 200
    action: tuple[str, str] | None = None  # (label, URL): what to do next, besides the thread


_STYLE = """
body{margin:0;font:1.05rem/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1b1f24;background:#f4f6f8}
main{max-width:38rem;margin:3rem auto;padding:2rem 2.25rem;background:#fff;border-radius:10px;
box-shadow:0 1px 4px rgba(0,0,0,.12);border-top:6px solid var(--accent)}
.success{--accent:#1a7f37}.problem{--accent:#b35900}
h1{font-size:1.45rem;margin:0 0 1rem}
p{margin:.6rem 0}
a.button{display:inline-block;margin-top:1.2rem;padding:.6rem 1.1rem;border-radius:6px;
background:#4a154b;color:#fff;text-decoration:none;font-weight:600}
a.button:focus{outline:3px solid #1d9bd1;outline-offset:2px}
""".strip()


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(page: Page) -> str:
    """The page as a complete HTML document."""
    role = "status" if page.tone is Tone.SUCCESS else "alert"
    body = "\n".join(f"<p>{escape(text)}</p>" for text in page.paragraphs)
    link = (
        f'<p><a class="button" href="{escape(page.thread_url, quote=True)}">'
        "Back to the Slack thread</a></p>"
        if page.thread_url
        else ""
    )
    if page.action is not None:
        label, url = page.action
        link = (
            f'<p><a class="button" href="{escape(url, quote=True)}">{escape(label)}</a></p>\n'
            + link
        )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{escape(page.title)} · provision-inline</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<main class="{page.tone.value}">\n<div role="{role}">\n'
        f"<h1>{escape(page.title)}</h1>\n{body}\n</div>\n{link}\n"
        "</main>\n</body>\n</html>\n"
    )


def consent_recorded(app_title: str, tenant_label: str, at: float, thread: str | None) -> Page:
    return Page(
        title=f"Consent recorded for {tenant_label}",
        tone=Tone.SUCCESS,
        paragraphs=(
            f"Microsoft confirmed the administrator consent for the {app_title} in the tenant "
            f"{tenant_label} at {when(at)}.",
            "The provisioning thread in Slack has been updated and shows the next step. "
            "You can close this page.",
        ),
        thread_url=thread,
    )


def consent_already_recorded(
    app_title: str, tenant_label: str, at: float | None, thread: str | None
) -> Page:
    since = f" at {when(at)}" if at is not None else ""
    return Page(
        title=f"Consent was already recorded for {tenant_label}",
        tone=Tone.SUCCESS,
        paragraphs=(
            f"The consent for the {app_title} had already been recorded{since}. Consenting "
            "again changed nothing.",
            "Continue in the Slack thread.",
        ),
        thread_url=thread,
    )


def consent_refused(
    app_title: str, tenant_label: str, cancelled: bool, detail: str, thread: str | None
) -> Page:
    if cancelled:
        first = f"The consent for the {app_title} was cancelled at the Microsoft sign-in page."
    else:
        first = f"Microsoft did not record the consent for the {app_title} in {tenant_label}."
    paragraphs = [first]
    if detail:
        paragraphs.append(f"Microsoft said: {detail}")
    paragraphs.append(
        "Nothing was changed. To try again, use the new consent link posted in the Slack "
        "thread, signed in as a Global Administrator of the tenant."
    )
    return Page(
        title="Consent not given",
        tone=Tone.PROBLEM,
        paragraphs=tuple(paragraphs),
        thread_url=thread,
    )


def consent_wrong_tenant(
    signed_in_tenant: str, tenant_label: str, tenant_id: str, thread: str | None
) -> Page:
    return Page(
        title="Signed in to a different tenant",
        tone=Tone.PROBLEM,
        paragraphs=(
            f"This provisioning session is for {tenant_label} (tenant {tenant_id}), but the "
            f"consent was given in tenant {signed_in_tenant}.",
            "Nothing was recorded for this session. Sign in with a Global Administrator "
            f"account of {tenant_label}, using the new link posted in the Slack thread.",
        ),
        thread_url=thread,
        status=400,
    )


def consent_not_confirmed(
    app_title: str, tenant_label: str, reason: str, retry: bool, thread: str | None
) -> Page:
    return Page(
        title="Microsoft has not confirmed the consent yet",
        tone=Tone.PROBLEM,
        paragraphs=(
            f"Microsoft sent you back saying the consent for the {app_title} was given, but "
            f"Microsoft itself does not show it in {tenant_label} yet: {reason}",
            "Nothing was recorded; the step stays open. "
            + (
                "If you have just accepted, Microsoft may need a minute: wait a minute, then "
                "open the new consent link posted in the Slack thread and accept again."
                if retry
                else "Use the new consent link posted in the Slack thread once the bot's "
                "operator has looked at it."
            ),
        ),
        thread_url=thread,
        status=409,
    )


def link_missing() -> Page:
    return Page(
        title="This page needs a link from Slack",
        tone=Tone.PROBLEM,
        paragraphs=(
            "This address only works as the return address of a Microsoft consent or sign-in "
            "started from the provisioning thread in Slack. Nothing was changed.",
            "Open the link from the thread's button instead.",
        ),
        status=400,
    )


def sign_in_answer_by_get() -> Page:
    return Page(
        title="This sign-in answer must be posted",
        tone=Tone.PROBLEM,
        paragraphs=(
            "Microsoft sends the answer of the role-assignment sign-in to this page as a form "
            "post; this one came in the address itself, where browsers, proxies and logs keep "
            "it. It was not used and nothing was changed.",
            "Go back to the provisioning thread in Slack and press Assign for me again to sign "
            "in afresh. Do not share or bookmark the address of this page.",
        ),
        status=400,
    )


def request_too_large(limit: int) -> Page:
    return Page(
        title="This request is too large",
        tone=Tone.PROBLEM,
        paragraphs=(
            f"Microsoft's return to this page carries a few short values; this one was over "
            f"{limit // 1024} KiB, so it was refused without being read. Nothing was changed.",
            "Go back to the provisioning thread in Slack and use the latest link there "
            "(the New link button makes a fresh one).",
        ),
        status=413,
    )


def redis_unavailable(*, link_kept: bool) -> Page:
    """Redis did not answer: nothing was recorded. ``link_kept``: the link was not used up, so
    the same page may simply be loaded again."""
    again = (
        "Reload this page in a few seconds: the link has not been used and still works."
        if link_kept
        else "In a few seconds, go back to the provisioning thread in Slack and press New "
        "link under the step, then sign in again."
    )
    return Page(
        title="Redis is unavailable for a moment",
        tone=Tone.PROBLEM,
        paragraphs=(
            "Redis is unavailable for a moment: nothing was changed. Try again in a few seconds.",
            again,
        ),
        status=503,
    )


def link_unknown() -> Page:
    return Page(
        title="This link is not valid",
        tone=Tone.PROBLEM,
        paragraphs=(
            "The link is not one the provisioning bot issued, or it is more than a day old. "
            "Nothing was changed.",
            "Go back to the provisioning thread in Slack and use the latest link there "
            "(the New link button makes a fresh one).",
        ),
        status=400,
    )


def link_replayed(thread: str | None) -> Page:
    return Page(
        title="This link was already used",
        tone=Tone.PROBLEM,
        paragraphs=(
            "Each consent or sign-in link works once, and this one has been used. Nothing was "
            "changed by this visit.",
            "The Slack thread shows what was recorded. If the step is still open, the thread "
            "offers a fresh link (New link, or New sign-in link); after an interruption on our "
            "side it offers one by itself within a minute.",
        ),
        thread_url=thread,
        status=400,
    )


def link_expired(minutes: int, thread: str | None) -> Page:
    return Page(
        title="This link has expired",
        tone=Tone.PROBLEM,
        paragraphs=(
            f"Consent links are valid for {minutes} minutes, and this one is older. "
            "Nothing was recorded.",
            "In the Slack thread, press New link under the step, then sign in again.",
        ),
        thread_url=thread,
        status=400,
    )


def session_over(tenant_label: str, how: str, thread: str | None) -> Page:
    return Page(
        title="This provisioning session has ended",
        tone=Tone.PROBLEM,
        paragraphs=(
            f"The session for {tenant_label} is {how}, so nothing was recorded.",
            "Start a new session with /provision-inline in Slack if the work is still needed.",
        ),
        thread_url=thread,
        status=409,
    )


def role_assigned(tenant_label: str, how: str, thread: str | None) -> Page:
    return Page(
        title="Exchange Administrator role assigned",
        tone=Tone.SUCCESS,
        paragraphs=(
            f"The mail-flow app now has the Exchange Administrator role in {tenant_label} ({how}).",
            "Your sign-in was used for this one request and then forgotten. The Slack thread "
            "shows the next step; you can close this page.",
        ),
        thread_url=thread,
    )


def sign_in_rejected(what: str, detail: str, fresh_link: str, thread: str | None) -> Page:
    """A sign-in answer that does not belong to the session's sign-in (a wrong nonce, another
    tenant): nothing was used, and a fresh link to sign in again."""
    paragraphs = [what]
    if detail:
        paragraphs.append(f"Microsoft's answer said: {detail}")
    paragraphs.append(
        "Nothing was assigned and nothing was recorded. Sign in again with a Privileged Role "
        "Administrator account of the session's tenant, using the new sign-in link below (also "
        "posted in the Slack thread)."
    )
    return Page(
        title="This sign-in could not be used",
        tone=Tone.PROBLEM,
        paragraphs=tuple(paragraphs),
        thread_url=thread,
        status=400,
        action=("Sign in again", fresh_link),
    )


def role_being_assigned(summary: str, thread: str | None) -> Page:
    return Page(
        title="The role is already being assigned",
        tone=Tone.PROBLEM,
        paragraphs=(summary, "This sign-in was not used: nothing was sent to Microsoft with it."),
        thread_url=thread,
        status=409,
    )


def role_not_assigned(summary: str, thread: str | None) -> Page:
    return Page(
        title="The role was not assigned",
        tone=Tone.PROBLEM,
        paragraphs=(
            summary,
            "Nothing was changed in the tenant. The Slack thread explains what to do next and "
            "has a button for a new sign-in link.",
        ),
        thread_url=thread,
    )
