"""The domain's errors: each has a stable ``code`` (for APIs, logs and tests) and a
``message`` a person can act on. Entry points translate them in one place each."""

from __future__ import annotations

from domain.names import isolated_handle


class DomainError(Exception):
    code: str = "error"
    message: str = "Something went wrong."
    # Raised at the end of Linked Roles' round trip, which Discord's verification URL started:
    # the way on is that URL again, not the account or sign-in page the others start from.
    in_linked_roles: bool = False
    # Raised at the end of a /link button's round trip, its ticket not spent: the way on is
    # that button again, not the account page (nothing there resumes a button).
    from_link_button: bool = False

    def __init__(self, message: str | None = None) -> None:
        self.message = message or type(self).message
        super().__init__(self.message)


class InvalidInput(DomainError):
    code = "invalid_input"
    message = "The input is not valid."


class InvalidUsername(InvalidInput):
    """A username no account may have (``validate_username``): what the form's field holds."""


class InvalidEmail(InvalidInput):
    """An address no account may have (``validate_email``): what the form's field holds."""


class InvalidDiscordId(InvalidInput):
    code = "invalid_discord_id"
    message = "A Discord id is a positive whole number that fits in 64 bits."


class NotFound(DomainError):
    code = "not_found"
    message = "Nothing was found."


class NotSignedIn(DomainError):
    code = "not_signed_in"
    message = "Please sign in first."


# -- one-time secrets (OAuth state, /link tickets) -------------------------------------------


class SecretRefused(DomainError):
    code = "secret_refused"


class SecretUnknown(SecretRefused):
    code = "secret_unknown"
    message = "This link is not valid. Start again from the beginning."


class SecretExpired(SecretRefused):
    code = "secret_expired"
    message = "This link has expired (links are valid for 10 minutes). Start again."


class SecretConsumed(SecretRefused):
    code = "secret_consumed"
    message = "This link has already been used. Start again if you need a new one."


class WrongBrowser(SecretRefused):
    code = "wrong_browser"
    message = (
        "This sign-in was started in a different browser. Start again in the browser "
        "you want to use."
    )


class StartedByAnotherVersion(SecretRefused):
    """Discord's callback for a round trip a newer release of this site started (its purpose
    is none this version knows: a rolling upgrade under way, or a code-only rollback). Not
    spent: this version cannot tell what it was for, and finishing it as anything else
    (a sign-in, say) would do what nobody asked."""

    code = "started_by_another_version"
    message = (
        "This attempt was started by another version of this site (a new one is being "
        "rolled out), so nothing was changed. Start again."
    )


class TicketRefused(SecretRefused):
    """A ``/link`` ticket (the button), not the sign-in's state, was refused: wherever that
    shows (its page, the page back from Discord), the way on is a new ``/link``."""


class TicketUnknown(SecretUnknown, TicketRefused):
    pass


class TicketSpent(SecretConsumed, TicketRefused):
    pass


class TicketReplaced(TicketSpent):
    """A /link button that a newer one of its Discord account replaced, left live because the
    two /link commands ran at once (each spends only the tickets committed before it): only the
    newest works, the older one is refused wherever it is used."""

    code = "ticket_replaced"
    message = "A newer /link button replaced this one: only the newest /link button works."


class TicketExpired(SecretExpired, TicketRefused):
    pass


class EmailLinkOutdated(SecretRefused):
    code = "email_link_outdated"
    message = (
        "This link was sent to an email address your account no longer uses. "
        "Ask for a new one from your account page."
    )


class EmailLinkDeclined(SecretConsumed):
    """A confirmation link whose address its holder declined ("This is not my account"),
    opened or used again: said to them, without the account's name."""

    code = "email_link_declined"
    message = (
        "You told us that the TaskFlow account this link was for is not yours, and your "
        "address was taken off it: this link no longer works, that account cannot take your "
        "address again, and there is nothing more to do. If another account is set up with "
        "your address, you get a new email, and can decline it the same way."
    )


# -- linking and login policies --------------------------------------------------------------


class LinkRefused(DomainError):
    code = "link_refused"


class DiscordLinkedElsewhere(LinkRefused):
    code = "discord_linked_elsewhere"
    message = (
        "This Discord account is already linked to another TaskFlow account. Unlink it there first."
    )


class AccountLinkedToOtherDiscord(LinkRefused):
    code = "account_linked_to_other_discord"
    message = (
        "Your TaskFlow account is already linked to a different Discord account. "
        "Unlink it first: one Discord account per TaskFlow account."
    )


class EmailAccountLinkedToOtherDiscord(AccountLinkedToOtherDiscord):
    """Sign in with Discord, by email: the one account with this address is linked to
    another Discord account. Said to someone who is not signed in (no "your account")."""

    message = (
        "The TaskFlow account with this email is linked to another Discord account, so this "
        "one cannot sign in to it. Sign in with that Discord account or your password; to use "
        "this one instead, unlink the other from the account page first."
    )


class EmailBelongsToAccount(LinkRefused):
    """Said alike whether that account confirmed the address or not, whether Discord
    verified it, and whatever the mode: what it says of accounts is only that one has this
    address. The ways in it names for someone with no account there (a decline from the
    confirmation email, a sign-up confirmed by its emailed link) work only for whoever reads
    the mailbox."""

    code = "email_belongs_to_account"
    message = (
        "An account with this email exists. Sign in with your password and link Discord "
        "from your account page (forgot it? reset it with this email). Not your account? If "
        "we emailed you a link to confirm this address for an account you did not create, "
        'open it and press "This is not my account"; or sign up with this email and confirm '
        "it by the link we send. Then sign in with Discord again."
    )


class AmbiguousEmail(LinkRefused):
    code = "ambiguous_email"
    message = (
        "More than one account uses this email, so we cannot tell which one is yours. "
        "Sign in with your password and link Discord from your account page."
    )


class TicketForAnotherDiscord(LinkRefused):
    """The person confirming a /link button signed in to Discord as someone else: the button
    was forwarded (or they picked the wrong Discord account). Nothing is linked."""

    code = "ticket_for_another_discord"
    message = (
        "This link was made for another Discord account, so nothing was linked. If you want "
        "to link your own Discord account, run /link yourself in Discord."
    )

    @classmethod
    def naming(cls, *, ticket_username: str, signed_in_as: str) -> TicketForAnotherDiscord:
        # Names their owners chose: isolated, so that one cannot read as the other.
        ticket = isolated_handle(ticket_username)
        signed_in = isolated_handle(signed_in_as)
        return cls(
            f"This link was made for the Discord account {ticket}, but you are "
            f"signed in to Discord as {signed_in}, so nothing was linked. Continue only "
            "with a link you got by running /link yourself: if you are "
            f"{ticket}, run /link again and sign in to Discord as {ticket}."
        )


class SignupDisabled(LinkRefused):
    code = "discord_signup_disabled"
    message = (
        "No TaskFlow account is linked to this Discord account, and new accounts cannot be "
        "created with Discord here. Sign in with your password (or create an account), then "
        "link Discord from your account page."
    )


class NotLinked(DomainError):
    code = "not_linked"
    message = "No Discord account is linked."


class DiscordNotLinkedYet(NotLinked):
    """Linked Roles, nobody signed in: the Discord account that came back links to nothing."""

    code = "discord_not_linked_yet"
    message = (
        "This Discord account is not linked to a TaskFlow account yet. Sign in to TaskFlow "
        "(you will come back here to connect), or run /link in Discord."
    )


class UnlinkWouldLockOut(DomainError):
    code = "unlink_would_lock_out"
    message = (
        "Discord is the only way to sign in to this account. Set a password on your "
        "account page first, then unlink."
    )


class NothingUnlinked(DomainError):
    """An API key that may not look links up is refused alike whether the id is not linked
    or its account could not sign in without Discord: told apart, a refusal that changes
    nothing would say who has a Discord-only account."""

    code = "nothing_unlinked"
    message = (
        "Nothing was unlinked: this Discord id is not linked, or Discord is its account's "
        "only way to sign in. A key with the scope links:read is told which."
    )


# -- API keys ---------------------------------------------------------------------------------


class ApiKeyExpired(DomainError):
    code = "api_key_expired"
    message = "This API key has expired. Ask for a new one (taskflow-link api-key create)."


class MissingScope(DomainError):
    """An API key that is valid but not allowed to do this."""

    code = "missing_scope"
    message = "This API key is not allowed to do this."


# -- accounts ---------------------------------------------------------------------------------


class ReauthenticationRequired(DomainError):
    code = "reauthentication_required"
    message = (
        "For your security, confirm it is you first: enter your password, or, for an account "
        "without one, sign in with Discord again. Then try again."
    )


class WrongDiscordAccount(DomainError):
    code = "wrong_discord_account"
    message = (
        "You signed in to Discord as another account than the one linked to this TaskFlow "
        "account. Sign in to Discord as the linked account, then try again."
    )


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    message = "The username/email or password is not right."


class PasswordChanged(InvalidCredentials):
    """The account's password hash is no longer the one a password was checked against.
    ``password_hash`` is the new one: a sign-in next to this one may only have replaced an
    outdated hash of the same password (see ``Passwords.while_right``). Never shown: it
    leaves the use case as ``InvalidCredentials``."""

    message = "The password of this account changed a moment ago: sign in with the new one."

    def __init__(self, password_hash: str | None) -> None:
        super().__init__()
        self.password_hash = password_hash


class UsernameTaken(DomainError):
    """Said the same whoever holds the name. Also what a sign-up form sent twice (a double
    click) shows when its second request is not told apart as the same form's (see
    ``SignUp``: no CSRF cookie, a minute gone): the browser keeps the second answer, whose
    request found the account the first one made."""

    code = "username_taken"
    message = (
        "This username is taken. Choose another one. Did you just create it (a form sent "
        "twice makes one account)? Then sign in with its password."
    )


class EmailTaken(DomainError):
    code = "email_taken"
    message = "An account with this email already exists. Sign in instead."


class EmailDeclined(InvalidInput):
    """An address whose holder declined this account ("This is not my account", with the
    confirmation link we emailed them): the account may not claim it again."""

    code = "email_declined"
    message = (
        "The owner of this email address told us that this TaskFlow account is not theirs "
        "(with the confirmation link we emailed them), so it cannot use this address. Use "
        "an address of your own."
    )


class OwnAccountNotDeclined(DomainError):
    """A "This is not my account" from a browser signed in to the very account the address was
    added to: its person is that account, and a decline (kept for good, ``DisownEmail``)
    would be their own by mistake. Said with the account's name (the browser's own)."""

    code = "own_account_not_declined"
    message = (
        "You are signed in to the account this address was added to, so it is yours: it "
        "cannot be declined from here. Nothing was changed."
    )


class WeakPassword(InvalidInput):
    code = "weak_password"


class TooManyRequests(DomainError):
    code = "too_many_requests"
    message = "You asked for this too often. Wait a few minutes, then try again."


class PasswordThrottled(TooManyRequests):
    """Too many wrong passwords for one account: its tries wait a while. Its owner's way on
    meanwhile is a password reset, which the message offers."""


# -- infrastructure seen from the core -----------------------------------------------------


class DiscordUnavailable(DomainError):
    code = "discord_unavailable"
    message = "Discord did not answer properly. Nothing was changed; try again in a minute."


class DiscordRateLimited(DiscordUnavailable):
    """Discord, or Cloudflare in front of it, asked for no more calls for a while: a 429
    that says how long (``retry_after``, in seconds; ``global_limit``: for every route, not
    only the one called; ``shared_limit``: a resource's limit, every caller's, not only the
    token's: X-RateLimit-Scope ``shared``), or one that does not (Cloudflare's HTML 429), or a
    403 that blocks
    the address (Cloudflare's page, Discord's JSON code 40333, or any 401 or 403 that is not
    Discord's JSON: whatever stands between us and Discord may answer every call alike).
    Nothing this user or call did: every call made meanwhile would get the same answer."""

    code = "discord_rate_limited"

    def __init__(
        self,
        retry_after: float | None = None,
        *,
        global_limit: bool = False,
        shared_limit: bool = False,
    ) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.global_limit = global_limit
        self.shared_limit = shared_limit


class DiscordDenied(DomainError):
    code = "discord_denied"
    message = "Discord did not grant access, so nothing was changed."


class TicketDenied(DiscordDenied):
    """Cancelled at Discord's consent screen on the way from a ``/link`` button: its ticket
    is not spent, so the way on is the same button, not a sign-in."""

    message = "Discord did not grant access, so nothing was linked."


class DiscordConfirmationFailed(DomainError):
    """A "Confirm with Discord" callback loaded twice: its first load, whose answer the
    browser left for this one, ended without renewing the session (Discord refused, another
    Discord account, Discord unreachable...)."""

    code = "discord_confirmation_failed"
    message = (
        "Confirming with Discord did not go through, so nothing was changed. "
        "Start again from your account page."
    )


class DiscordSignInFailed(DomainError):
    """A "Sign in with Discord" callback loaded twice: its first load, whose answer the
    browser left for this one, ended without signing in (Discord refused, a refusal of the
    sign-in's own, Discord unreachable, or the account's password asked for first...)."""

    code = "discord_sign_in_failed"
    message = (
        "The page back from Discord was loaded again (reloaded, or Authorize clicked twice), "
        "and its first load did not sign you in, so nothing was changed."
    )


class DiscordSignInStopped(DomainError):
    """A "Sign in with Discord" whose browser signed out, or signed in again, after its round
    trip started (while its callback waited on Discord, say): it started no session, made no
    link proposal, and left the browser's cookies as they are (signed out, or signed in as
    the later sign-in left it). Its callback opened again (the next person at a shared
    computer going back in the history) hands nothing over."""

    code = "discord_sign_in_stopped"
    message = (
        "This browser signed out (or signed in again) while this sign-in with Discord was "
        "under way, so it did not sign you in and nothing was changed. Sign in again if you "
        "want to."
    )


class LinkedRoleVerificationFailed(DomainError):
    """Linked Roles' verification URL started signed in (no sign-in), its callback loaded
    twice: its first load, whose answer the browser left for this one, ended without
    connecting (or linking) for a reason not told again in its own words."""

    code = "linked_role_verification_failed"
    message = (
        "The page back from Discord was loaded again (reloaded, or Authorize clicked twice), "
        "and its first load did not connect your account, so nothing was changed."
    )


class DiscordSignInUsed(SecretConsumed):
    """A "Sign in with Discord" callback loaded again (reloaded, opened from the history)
    after its first load signed in, from a browser no longer signed in with the session it
    opened (signed out since, say, or that session renewed under a token this browser never
    received: it may live on, but it is not this browser's to be handed): nothing to hand
    over, and nothing under way. ``destination``: where that sign-in was bound, for its way
    to sign in again."""

    code = "discord_sign_in_used"
    message = (
        "This sign-in with Discord was used already: it signed you in, and this browser is no "
        "longer signed in with it (signed out since, say). Discord's answer can be used once: "
        "sign in again."
    )
    destination: str = "/account"
    # Said besides when that sign-in linked the account by its confirmed email, naming nobody
    # (its notice, which named the account, went with an answer the browser may never have
    # received).
    linked_by_email = (
        "This sign-in with Discord was used already: it linked your Discord account to the "
        "TaskFlow account with the same confirmed email address (an email to that address "
        "says so), and signed you in to it, but this browser is not signed in with it. "
        "Discord's answer can be used once: sign in again."
    )

    @classmethod
    def bound_for(cls, destination: str, *, linked_by_email: bool = False) -> DiscordSignInUsed:
        used = cls(cls.linked_by_email if linked_by_email else None)
        used.destination = destination
        return used


class DiscordGrantRevoked(DomainError):
    """Discord answered ``invalid_grant`` to a refresh token: the person removed the app from
    their Discord account, or the token was used already. It will never work again."""

    code = "discord_grant_revoked"
    message = "Discord no longer grants access to this account. Connect it again."


class SecretUnreadable(DomainError):
    """A value sealed with a key that is no longer configured (or altered since)."""

    code = "secret_unreadable"
    message = "A stored secret could not be decrypted with the configured keys."


class EmailNotSent(DomainError):
    code = "email_not_sent"
    message = "We could not send the email just now. Try again in a few minutes."


class EmailRefused(EmailNotSent):
    """The mail server refused the recipient for good (a 5xx answer to it: no such mailbox,
    say): sending again cannot help, so the email is given up at once."""

    code = "email_refused"


class WebhookNotDelivered(DomainError):
    """No HTTP answer from a webhook endpoint; ``message`` is a short code for the record
    (``timeout``, ``connection``), never anything the endpoint sent."""

    code = "webhook_not_delivered"
    message = "connection"


class Conflict(DomainError):
    """A uniqueness rule was hit by a concurrent change; the transaction was rolled back."""

    code = "conflict"
    message = "Someone else changed this at the same moment. Try again."


class StorageError(DomainError):
    """The database cannot be reached (an outage): worth trying again soon."""

    code = "storage_unavailable"
    message = "The service cannot reach its database right now. Try again shortly."


class StorageContention(StorageError):
    """The database rolled the transaction back to let another one through (Postgres broke a
    deadlock, or a serialization failure): nothing is wrong, and trying again works."""

    # Its code stays ``storage_unavailable``: an API client retries it as it does an outage.
    message = "Another request was changing the same things at that moment. Try again."


class StorageNotReady(StorageError):
    """The database has not got this version's tables or columns yet (``db upgrade`` not run,
    or still running): the operator's step, not a bug, and over once it is done. The person
    sees the outage's answer; the log says what to run, and ``missing``: what the database
    said it has not got (its words, without the statement or its parameters), which tells a
    query's own mistake apart."""

    def __init__(self, missing: str = "") -> None:
        super().__init__()
        self.missing = missing


class StorageFault(DomainError):
    """The database refused a statement for another reason than an outage: a bug to fix, not
    a moment to wait out. Logged with its cause; the person sees a plain 500."""

    code = "storage_fault"
    message = "Something went wrong on our side. Try again in a minute."
