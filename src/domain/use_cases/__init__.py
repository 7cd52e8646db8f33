"""Use cases: one class per operation, ports injected, one ``async def execute``."""

from domain.use_cases._shared import LinkResult
from domain.use_cases.accounts import (
    CurrentAccount,
    SetPassword,
    SignedIn,
    SignIn,
    SignOut,
    SignUp,
)
from domain.use_cases.api_keys import (
    AuthenticateApiKey,
    CreateApiKey,
    CreatedApiKey,
    ListApiKeys,
    RevokeApiKey,
)
from domain.use_cases.discord_auth import (
    AuthCompleted,
    AuthOutcome,
    AuthStarted,
    CompleteDiscordAuth,
    StartDiscordLink,
    StartDiscordLogin,
)
from domain.use_cases.links import (
    LinkedAccount,
    LinkOfAccount,
    LookUpLink,
    UnlinkAccount,
    UnlinkDiscord,
    WhoAmI,
)
from domain.use_cases.maintenance import PurgeExpired, PurgeReport
from domain.use_cases.tickets import (
    AlreadyLinked,
    IssueLinkTicket,
    RedeemLinkTicket,
    ShowLinkTicket,
    TicketIssued,
)

__all__ = [
    "AlreadyLinked",
    "AuthCompleted",
    "AuthOutcome",
    "AuthStarted",
    "AuthenticateApiKey",
    "CompleteDiscordAuth",
    "CreateApiKey",
    "CreatedApiKey",
    "CurrentAccount",
    "IssueLinkTicket",
    "LinkOfAccount",
    "LinkResult",
    "LinkedAccount",
    "ListApiKeys",
    "LookUpLink",
    "PurgeExpired",
    "PurgeReport",
    "RedeemLinkTicket",
    "RevokeApiKey",
    "SetPassword",
    "ShowLinkTicket",
    "SignIn",
    "SignOut",
    "SignUp",
    "SignedIn",
    "StartDiscordLink",
    "StartDiscordLogin",
    "TicketIssued",
    "UnlinkAccount",
    "UnlinkDiscord",
    "WhoAmI",
]
