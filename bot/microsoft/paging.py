"""Following ``@odata.nextLink``: only to the host the client was configured with.

A paging link comes from the answer, and the next request carries a bearer token (the signed-in
Privileged Role Administrator's own, for role assignments): a link to any other scheme, host or
port is refused rather than followed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bot.microsoft.errors import UntrustedLink

__all__ = ["next_page"]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def next_page(link: object, base: str) -> str | None:
    """The next page's URL if ``link`` is one on ``base``'s origin; ``None`` when there is none.

    Raises ``UntrustedLink`` for a link anywhere else.
    """
    if not link:
        return None
    url = str(link)
    if _origin(url) != _origin(base):
        raise UntrustedLink(urlsplit(url).hostname or url[:80])
    return url
