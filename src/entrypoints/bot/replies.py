"""What the bot says: plain values built from use-case results and domain errors.

Every reply is ephemeral (only the person who ran the command sees it). This module is the one
place where domain errors become Discord replies; it knows nothing of hikari.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain import errors
from domain.model import ONE_TIME_SECRET_TTL
from domain.use_cases import AlreadyLinked, LinkedAccount, TicketIssued

LINK_BUTTON_LABEL = "Link TaskFlow account"
SOMETHING_WENT_WRONG = (
    "Something went wrong on our side. Try again in a minute; /whoami shows where things stand."
)
# A button pressed or a modal submitted that nothing of this version handles (a message an
# older version sent, say).
NO_LONGER_WORKS = "This no longer works. Run the command again for a fresh one."
_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()-])")


@dataclass(frozen=True, slots=True)
class Button:
    """A link button (Discord style 5): it opens ``url`` in the browser."""

    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    button: Button | None = None


def _bold(text: str) -> str:
    """A name shown verbatim: usernames may contain Markdown characters."""
    escaped = _MARKDOWN.sub(r"\\\1", text)
    return f"**{escaped}**"


class Replies:
    """Builds replies; links point at the web app's public URL."""

    def __init__(self, public_url: str) -> None:
        self._base = public_url.rstrip("/")

    def _account_button(self) -> Button:
        return Button("Open your TaskFlow account", f"{self._base}/account")

    def link(self, outcome: TicketIssued | AlreadyLinked) -> Reply:
        if isinstance(outcome, AlreadyLinked):
            return Reply(
                f"Your Discord account is already linked to the TaskFlow account "
                f"{_bold(outcome.account.username)}. To link another account, run /unlink "
                "first (or unlink on your account page).",
                self._account_button(),
            )
        minutes = int(ONE_TIME_SECRET_TTL.total_seconds() // 60)
        return Reply(
            "Link your Discord account to TaskFlow: press the button, sign in to TaskFlow "
            "(or create an account), then confirm with Discord as this account. The button "
            f"works once, until your next /link, and expires in {minutes} minutes. Only you "
            "can see this message; do not share the link.",
            Button(LINK_BUTTON_LABEL, f"{self._base}/link/{outcome.token}"),
        )

    def unlinked(self, removed: LinkedAccount) -> Reply:
        return Reply(
            f"Done: your Discord account is no longer linked to the TaskFlow account "
            f"{_bold(removed.account.username)}. Run /link to link again."
        )

    def who_am_i(self, linked: LinkedAccount | None) -> Reply:
        if linked is None:
            return Reply(
                "Your Discord account is not linked to a TaskFlow account. Run /link to link it."
            )
        since = linked.link.linked_at.strftime("%Y-%m-%d")
        return Reply(
            f"Your Discord account is linked to the TaskFlow account "
            f"{_bold(linked.account.username)} (since {since}).",
            self._account_button(),
        )

    def error(self, error: BaseException) -> Reply:
        """The reply for a command that failed; unexpected failures say nothing specific."""
        if isinstance(error, errors.NotLinked):
            return Reply(
                "Your Discord account is not linked to a TaskFlow account, so there is "
                "nothing to unlink. Run /link to link it."
            )
        if isinstance(error, errors.UnlinkWouldLockOut):
            return Reply(
                "You cannot unlink yet: Discord is the only way to sign in to your TaskFlow "
                "account. Set a password on your account page first, then run /unlink again.",
                self._account_button(),
            )
        if isinstance(error, errors.StorageError):
            return Reply(SOMETHING_WENT_WRONG)
        if isinstance(error, errors.DomainError):
            return Reply(error.message)
        return Reply(SOMETHING_WENT_WRONG)
