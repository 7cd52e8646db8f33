"""Use cases: one class per operation, ports injected, one ``async def execute``."""

from domain.use_cases._email_links import EmailLinkShown, ShowEmailLink
from domain.use_cases._shared import LinkResult
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.use_cases.accounts import SetPassword, SignedIn, SignIn, SignUp
from domain.use_cases.api_keys import (
    AuthenticateApiKey,
    CreateApiKey,
    CreatedApiKey,
    ListApiKeys,
    RevokeApiKey,
)
from domain.use_cases.audit import ReadAuditTrail
from domain.use_cases.discord_auth import (
    AuthCompleted,
    AuthOutcome,
    AuthStarted,
    CompleteDiscordAuth,
    StartDiscordLink,
    StartDiscordLogin,
    StartDiscordReauth,
    StartTicketLink,
)
from domain.use_cases.discord_roles import (
    ApplyRoleChanges,
    RequestRolesForLinks,
    RoleChangeReport,
    RoleQueue,
    ShowRoleQueue,
)
from domain.use_cases.email_delivery import DeliverEmails, DeliveryReport, RequeueFailedEmails
from domain.use_cases.email_linking import (
    ConfirmLinkWithEmail,
    ConfirmLinkWithPassword,
    EmailLinkConfirmation,
    LinkConfirmed,
    ProposalShown,
    ShowLinkProposal,
)
from domain.use_cases.email_verification import (
    ChangeEmail,
    EmailStatus,
    ResendVerification,
    ShowEmailStatus,
    VerifyEmail,
)
from domain.use_cases.links import (
    BulkLookup,
    LinkedAccount,
    LinkOfAccount,
    LookUpLink,
    LookUpLinks,
    UnlinkAccount,
    UnlinkDiscord,
    WhoAmI,
)
from domain.use_cases.maintenance import PurgeExpired, PurgeReport
from domain.use_cases.password_reset import PasswordReset, RequestPasswordReset, ResetPassword
from domain.use_cases.sessions import (
    ConfirmPassword,
    CurrentSession,
    EndAllSessions,
    EndSession,
    ListSessions,
    SessionList,
    SignedInAs,
    SignOut,
)
from domain.use_cases.tickets import (
    AlreadyLinked,
    IssueLinkTicket,
    ShowLinkTicket,
    TicketIssued,
)
from domain.use_cases.webhooks import (
    DeliverWebhooks,
    EndpointStatus,
    RequeueWebhooks,
    ShowWebhookStatus,
    WebhookReport,
)

__all__ = [
    "NO_WEBHOOKS",
    "AlreadyLinked",
    "ApplyRoleChanges",
    "AuthCompleted",
    "AuthOutcome",
    "AuthStarted",
    "AuthenticateApiKey",
    "BulkLookup",
    "ChangeEmail",
    "CompleteDiscordAuth",
    "ConfirmLinkWithEmail",
    "ConfirmLinkWithPassword",
    "ConfirmPassword",
    "CreateApiKey",
    "CreatedApiKey",
    "CurrentSession",
    "DeliverEmails",
    "DeliverWebhooks",
    "DeliveryReport",
    "EmailLinkConfirmation",
    "EmailLinkShown",
    "EmailStatus",
    "EndAllSessions",
    "EndSession",
    "EndpointStatus",
    "IssueLinkTicket",
    "LinkConfirmed",
    "LinkOfAccount",
    "LinkResult",
    "LinkedAccount",
    "ListApiKeys",
    "ListSessions",
    "LookUpLink",
    "LookUpLinks",
    "PasswordReset",
    "ProposalShown",
    "PurgeExpired",
    "PurgeReport",
    "ReadAuditTrail",
    "RequestPasswordReset",
    "RequestRolesForLinks",
    "RequeueFailedEmails",
    "RequeueWebhooks",
    "ResendVerification",
    "ResetPassword",
    "RevokeApiKey",
    "RoleChangeReport",
    "RoleQueue",
    "SessionList",
    "SetPassword",
    "ShowEmailLink",
    "ShowEmailStatus",
    "ShowLinkProposal",
    "ShowLinkTicket",
    "ShowRoleQueue",
    "ShowWebhookStatus",
    "SignIn",
    "SignOut",
    "SignUp",
    "SignedIn",
    "SignedInAs",
    "StartDiscordLink",
    "StartDiscordLogin",
    "StartDiscordReauth",
    "StartTicketLink",
    "TicketIssued",
    "UnlinkAccount",
    "UnlinkDiscord",
    "VerifyEmail",
    "WebhookOutbox",
    "WebhookReport",
    "WhoAmI",
]
