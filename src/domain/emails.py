"""The words of every email the service sends. Pure: a queued email in, a message out.

Each email says why it was sent, what to do if it was not you, and (for one-time links)
that the link works once and when it expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.model import EmailKind, OutgoingEmail
from domain.names import isolated_handle
from domain.ports import EmailMessage

VERIFY_PATH = "/verify-email/"
RESET_PATH = "/password/reset/"
CONFIRM_LINK_PATH = "/auth/discord/confirm-link/"


@dataclass(frozen=True, slots=True)
class OneTimeLink:
    token: str
    expires_at: datetime


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _discord_account(detail: dict[str, str]) -> str:
    """The Discord account an email is about, as its owner chose to name it: isolated, so that
    it cannot read as another name, with its id when the email was queued with one."""
    name = detail.get("discord_username")
    shown = isolated_handle(name) if isinstance(name, str) and name else "@?"
    discord_id = detail.get("discord_id")
    return f"{shown} (id {discord_id})" if isinstance(discord_id, str) and discord_id else shown


def compose(
    email: OutgoingEmail, *, username: str, base_url: str, link: OneTimeLink | None
) -> EmailMessage:
    base = base_url.rstrip("/")
    detail = email.detail
    when = _when(email.created_at)
    not_you = (
        f"If this was not you, reset your password now at {base}/password/reset "
        "and check the Discord account linked on your account page."
    )
    match email.kind:
        case EmailKind.VERIFY_EMAIL:
            assert link is not None  # noqa: S101 - DeliverEmails issues one for this kind
            return EmailMessage(
                email.to,
                "Confirm your email address for TaskFlow",
                f"Hi {username},\n\n"
                f"Please confirm that {email.to} is your email address for the TaskFlow "
                f"account {username}:\n\n"
                f"{base}{VERIFY_PATH}{link.token}\n\n"
                f"The link works once and expires at {_when(link.expires_at)} (24 hours). "
                "You can ask for a new one on your account page.\n\n"
                f"If you did not create the TaskFlow account {username}, do not confirm: "
                "anyone can type any address when signing up. Open the link and choose "
                '"This is not my account" to take your address off it, or ignore this '
                "email.\n",
            )
        case EmailKind.RESET_PASSWORD:
            assert link is not None  # noqa: S101
            action = "reset" if detail.get("has_password") == "yes" else "set"
            return EmailMessage(
                email.to,
                f"{action.capitalize()} your TaskFlow password",
                f"Hi {username},\n\n"
                f"Someone asked to {action} the password of the TaskFlow account {username}. "
                "Choose a new password here:\n\n"
                f"{base}{RESET_PATH}{link.token}\n\n"
                f"The link works once and expires at {_when(link.expires_at)} (1 hour). "
                "Saving a new password signs the account out everywhere else.\n\n"
                "If you did not ask for this, ignore this email: nothing changes.\n",
            )
        case EmailKind.CONFIRM_DISCORD_LINK:
            assert link is not None  # noqa: S101
            discord = _discord_account(detail)
            return EmailMessage(
                email.to,
                "Confirm linking your Discord account to TaskFlow",
                f"Hi {username},\n\n"
                f"Someone signed in to TaskFlow with the Discord account {discord}, whose "
                f"verified email is this address, and asked to link it to your TaskFlow account "
                f"{username}. If it was you, open this link in the same browser and confirm:\n\n"
                f"{base}{CONFIRM_LINK_PATH}{link.token}\n\n"
                f"The link works once, until {_when(link.expires_at)} (30 minutes after the "
                "sign-in with Discord it confirms).\n\n"
                "If it was not you, ignore this email: nothing is linked.\n",
            )
        case EmailKind.DISCORD_LINKED:
            return EmailMessage(
                email.to,
                "A Discord account was linked to your TaskFlow account",
                f"Hi {username},\n\n"
                f"The Discord account {_discord_account(detail)} was linked to your "
                f"TaskFlow account {username} at {when}. It can now sign you in to TaskFlow.\n\n"
                f"{not_you}\n",
            )
        case EmailKind.DISCORD_UNLINKED:
            return EmailMessage(
                email.to,
                "A Discord account was unlinked from your TaskFlow account",
                f"Hi {username},\n\n"
                f"The Discord account {_discord_account(detail)} was unlinked from "
                f"your TaskFlow account {username} at {when}.\n\n{not_you}\n",
            )
        case EmailKind.PASSWORD_CHANGED:
            return EmailMessage(
                email.to,
                "Your TaskFlow password was changed",
                f"Hi {username},\n\n"
                f"The password of your TaskFlow account {username} was changed at {when}. "
                "Other devices were signed out.\n\n"
                f"If this was not you, reset your password now at {base}/password/reset.\n",
            )
        case EmailKind.ROLE_CONNECTION_LOST:
            discord = _discord_account(detail)
            again = (
                f"open {base}/discord/linked-role (or the server's Linked Roles in Discord) and "
                "allow TaskFlow"
            )
            if detail.get("why") == "unreadable":
                # The tokens are kept (or deleted), unopened: nothing tells Discord anything,
                # so it keeps what it was last told. No role goes; none follows TaskFlow.
                return EmailMessage(
                    email.to,
                    "Your TaskFlow connection on Discord stopped updating",
                    f"Hi {username},\n\n"
                    f"The TaskFlow connection of your Discord account {discord} (Linked "
                    f"Roles) stopped updating at {when}: TaskFlow can no longer read the access "
                    "Discord gave it (a problem on TaskFlow's side, nothing you did). Discord "
                    "server roles that need a TaskFlow connection stay as they were last "
                    "updated, but no longer follow your TaskFlow account: the days you have "
                    "been linked stop counting, and an unlink would not reach Discord.\n\n"
                    f"To have it updated again, {again}. Your Discord account stays linked "
                    "to TaskFlow.\n",
                )
            return EmailMessage(
                email.to,
                "Your TaskFlow connection on Discord was lost",
                f"Hi {username},\n\n"
                f"The TaskFlow connection of your Discord account {discord} (Linked Roles) "
                f"was lost at {when}: Discord no longer lets TaskFlow update it (the TaskFlow "
                "app was removed from your Discord account, or Discord ended its access). "
                "Discord server roles that need a TaskFlow connection may be taken away from "
                "you.\n\n"
                f"To connect it again, {again}. If you removed the app on purpose, nothing "
                "else is needed: your Discord account stays linked to TaskFlow.\n",
            )
        case EmailKind.EMAIL_CHANGED:
            return EmailMessage(
                email.to,
                "Your TaskFlow email address was changed",
                f"Hi {username},\n\n"
                f"The email address of your TaskFlow account {username} was changed from "
                f"{email.to} to {detail.get('new_email', '?')} at {when}. "
                "This address gets no more emails about the account.\n\n"
                "If this was not you, contact TaskFlow support: someone may be using your "
                "account.\n",
            )
