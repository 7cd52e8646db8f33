from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey

if TYPE_CHECKING:
    from entrypoints.emulator.gateway import GatewaySession

# Discord's rule: the first answer to an interaction must come within 3 seconds; the token
# then works 15 minutes for the webhook (edit the original, follow-ups).
DISCORD_RESPONSE_DEADLINE = 3.0
INTERACTION_TOKEN_LIFETIME = 15 * 60.0
# Discord's OAuth2 access tokens live 7 days (expires_in 604800); refresh tokens until used
# (each refresh gives a new one) or until the user removes the app.
ACCESS_TOKEN_LIFETIME = 604800
# A snowflake's upper bits are the milliseconds since Discord's epoch (2015-01-01) when it was
# made: an interaction's id says when Discord created it.
DISCORD_EPOCH_MS = 1_420_070_400_000
SNOWFLAKE_TIME_SHIFT = 22
# RFC 7636: a PKCE code_verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~.
CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
TEST_GUILD_ID = "1300000000000000001"
TEST_CHANNEL_ID = "1300000000000000002"
BOT_ROLE_ID = "1300000000000000003"  # the bot's own role in the test server
BOT_ROLE_POSITION = 10
# What ``EmulatorState.reset`` keeps: the application's identity (the service's settings name
# it) and the id counter (ids stay ever increasing, apart from those before the reset).
# The gateway connections open are kept too: a reset closes none (a bot that stopped leaves).
KEPT_ON_RESET = frozenset(
    {"client_id", "client_secret", "bot_token", "signing_key", "_next_id", "gateway_sessions"}
)


def same_secret(given: str, expected: str) -> bool:
    """A constant-time comparison of a secret someone sent (a token, a client secret) with
    the real one. As bytes: ``secrets.compare_digest`` refuses ``str`` with characters beyond
    ASCII by raising, and a request's path, form or header may hold any; Discord answers
    those as any wrong secret, never with a 500."""
    return secrets.compare_digest(given.encode(), expected.encode())


@dataclass
class TestUser:
    __test__ = False  # not a pytest class

    id: str
    username: str
    global_name: str | None = None
    avatar: str | None = None
    email: str | None = None
    verified: bool = False

    def public(self, scopes: frozenset[str]) -> dict[str, Any]:
        """Discord's user object; ``email``/``verified`` only with the ``email`` scope."""
        body: dict[str, Any] = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": self.avatar,
            "bot": False,
            "mfa_enabled": False,
            "locale": "en-US",
            "flags": 0,
            "premium_type": 0,
            "public_flags": 0,
        }
        if "email" in scopes:
            body["email"] = self.email
            body["verified"] = self.verified
        return body


@dataclass
class GuildRole:
    id: str
    name: str
    position: int  # Discord's role hierarchy: a bot manages only roles below its highest
    color: int = 0
    managed: bool = False  # a bot's own role

    def public(self) -> dict[str, Any]:
        """Discord's role object."""
        return {
            "id": self.id,
            "name": self.name,
            "color": self.color,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": "0",
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class RoleRequest:
    """A call to add or remove a member's role, and what the emulator answered."""

    method: str  # PUT or DELETE
    user_id: str
    role_id: str
    status: int
    code: int | None  # Discord's error code (None: 204)
    reason: str | None  # the X-Audit-Log-Reason, decoded


@dataclass
class Guild:
    """A server with roles and members, the bot among them (its own role, and whether that
    role has Manage Roles)."""

    id: str
    name: str
    roles: dict[str, GuildRole] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # user id -> role ids
    bot_role_id: str = BOT_ROLE_ID
    bot_manage_roles: bool = True
    bot_member: bool = True  # False: the bot was removed from the server (50001 Missing Access)
    role_requests: list[RoleRequest] = field(default_factory=list)
    # Discord's rate limit of the member roles route in this server: this many calls in a
    # window of this many seconds from the first (Discord's own numbers are its own, and
    # change; a test sets smaller ones), and the window under way (its end on the monotonic
    # clock, and the calls made in it).
    role_limit: int = 50
    role_limit_window: float = 1.0
    role_window: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        # @everyone has the server's id and position 0; the bot's role sits above new roles.
        self.roles.setdefault(self.id, GuildRole(self.id, "@everyone", 0))
        self.roles.setdefault(
            self.bot_role_id,
            GuildRole(self.bot_role_id, "TaskFlow Link", BOT_ROLE_POSITION, managed=True),
        )

    @property
    def bot_position(self) -> int:
        return self.roles[self.bot_role_id].position

    def roles_of(self, user_id: str) -> list[GuildRole]:
        """The member's roles, highest first (none for someone not in the server)."""
        held = (self.roles[r] for r in self.members.get(user_id, set()) if r in self.roles)
        return sorted(held, key=lambda role: -role.position)


@dataclass
class Grant:
    user_id: str
    scopes: frozenset[str]
    redirect_uri: str
    code_challenge: str | None
    expires_at: float


@dataclass
class Interaction:
    """An interaction the emulator sent, and what the service answered through the callback."""

    id: str
    token: str
    user_id: str
    command: str
    guild_id: str | None
    sent_at: float  # on the emulator's clock (``EmulatorState.clock``)
    # Its type (2: a slash command, 3: a component, 4: an autocomplete, 5: a modal submit),
    # which decides the answers Discord takes; ``on_message``: it came from a message (a
    # component's, a modal a component opened).
    kind: int = 2
    on_message: bool = False
    # The shards of the gateway connections it was dispatched to (one, when sharded well).
    shards: list[tuple[int, int]] = field(default_factory=list)
    response: dict[str, Any] | None = None
    responded_after: float | None = None  # seconds after sent_at
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # A deferred answer (type 5) is completed later through the interaction's webhook.
    edited: asyncio.Event = field(default_factory=asyncio.Event)
    followups: list[dict[str, Any]] = field(default_factory=list)
    # The original response's message (its id once it has one; deleted through the webhook),
    # when it was sent and when last edited (Discord's ``timestamp``/``edited_timestamp``).
    message_id: str | None = None
    message_sent_at: str | None = None
    message_edited_at: str | None = None
    deleted: bool = False
    # Discord error codes given to answers refused at the callback (40060: a second answer).
    refused: list[int] = field(default_factory=list)
    # The error bodies Discord gave the service's answers, wherever they came (the HTTP
    # response, the callback, the webhook): a 50035 names the invalid field.
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EmulatorState:
    client_id: str
    client_secret: str
    redirect_uris: set[str]
    users: dict[str, TestUser] = field(default_factory=dict)
    codes: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    # When each access token stops working (time.time()); tests end one early (expire_tokens).
    token_expiry: dict[str, float] = field(default_factory=dict)
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    # Linked Roles: the application's metadata records (bot token), and each user's role
    # connection (user id -> {"platform_name", "platform_username", "metadata"}).
    role_metadata: list[dict[str, Any]] = field(default_factory=list)
    role_connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    role_connections_verification_url: str | None = None
    # Discord's rate limit of the role connection push, per user (their token): this many
    # calls in a window of this many seconds (a test sets smaller ones), and each user's
    # window under way (user id -> (its end on the monotonic clock, calls made in it)).
    role_connection_limit: int = 50
    role_connection_limit_window: float = 1.0
    role_connection_windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    # Users whose own token met Discord's global limit (a user's, per token): user id -> when
    # it resets (the monotonic clock). Their role connection calls are a global 429 until then.
    globally_limited: dict[str, float] = field(default_factory=dict)
    # What each test user granted this application (user id -> scopes), as Discord remembers
    # it: a returning user is sent straight back unless the request says prompt=consent.
    authorizations: dict[str, frozenset[str]] = field(default_factory=dict)
    # Who is signed in to "Discord" in each browser (session cookie -> user id).
    browser_sessions: dict[str, str] = field(default_factory=dict)
    # endpoint name ("token", for the code and refresh grants alike, "users_me", "token_revoke",
    # "member_roles", "role_connection") -> "500" | "timeout" | "garbage" | "429" |
    # "429-global" | "429-shared" (a resource's limit) | "cloudflare" (HTML 429) |
    # "cloudflare-403" (HTML 403) | "blocked" (JSON 403, code 40333: Cloudflare's block as
    # Discord words it); "callback" -> "reject"
    faults: dict[str, str] = field(default_factory=dict)
    # Calls each of those endpoints got, a fault's answer or not (a rate limit's test counts
    # the calls that went on after it).
    calls: Counter[str] = field(default_factory=Counter)
    user_agents: list[str] = field(default_factory=list)  # what callers of the token endpoint said
    # How long "timeout" and "late" hold an answer (less, if the fault is lifted).
    fault_delay: float = 5.0
    # The bot side: its token, the key that signs interactions, where they are sent.
    bot_token: str = ""  # Discord's shape: base64(application id).timestamp.hmac
    signing_key: SigningKey = field(default_factory=SigningKey.generate)
    interactions_url: str | None = None
    # The gateway: the shard count GET /gateway/bot recommends, and the fewest shards a
    # connection may identify with (fewer: 4011 Sharding required, as Discord answers a bot in
    # too many servers for its shard count).
    gateway_shards: int = 1
    required_shards: int = 1
    # The privileged intents enabled for the application in the Developer Portal (a bit
    # field; none, as for a new application): IDENTIFY naming another is closed with 4014.
    privileged_intents: int = 0
    # The heartbeat interval HELLO gives (seconds; Discord's is about 41.25). A connection that
    # sends no heartbeat for ``HEARTBEAT_GRACE`` intervals is closed with 4009 Session timed
    # out, as Discord closes a zombied one. Tests of that set a small one.
    heartbeat_interval: float = 41.25
    # Discord's gateway rate limit: a connection may send this many payloads (any: heartbeats,
    # IDENTIFY, RESUME, presence updates) in a window of this many seconds from the first; the
    # next is closed with 4008 Rate limited. Discord's numbers, 120 in 60 s, which hikari keeps
    # under by itself (the same window a shard, 3 of the 120 kept for heartbeats); tests of the
    # limit set a smaller count.
    gateway_command_limit: int = 120
    gateway_command_window: float = 60.0
    # The close codes the gateway sent, oldest first (a bot's tests check it never met 4008).
    gateway_closes: list[int] = field(default_factory=list)
    # How long after sending an interaction an answer is still taken (Discord: 3 s). Tests on
    # a busy machine set more, so that only the behaviour under test can miss it.
    response_deadline: float = DISCORD_RESPONSE_DEADLINE
    # The clock Discord times an interaction with (seconds; ``response_deadline``, the
    # token's 15 minutes): the monotonic clock. A test of what comes before a deadline and
    # what after gives one it moves itself, which the service's event loop runs on too.
    clock: Callable[[], float] = time.monotonic
    # The network between Discord and the service, one way (seconds): an interaction reaches
    # the service this much later, and its answer (or callback) reaches Discord this much
    # later, all inside ``response_deadline``, as Discord counts its 3 seconds. The webhook
    # calls (edits, follow-ups) cross the same network.
    transit_delay: float = 0.0
    # How long the test API waits for a deferred answer to be completed (Discord keeps the
    # interaction's webhook 15 minutes).
    followup_wait: float = 10.0
    application_name: str = "TaskFlow Link (emulated)"
    # Registered slash commands by scope: "global" or a guild id.
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The 50035 bodies of refused command registrations, oldest first.
    refused_commands: list[dict[str, Any]] = field(default_factory=list)
    interactions: dict[str, Interaction] = field(default_factory=dict)
    # Links the channel page shows (the demo's web app and outbox), label -> URL.
    service_links: dict[str, str] = field(default_factory=dict)
    # Servers with roles and members (the test server to begin with; test users join it).
    guilds: dict[str, Guild] = field(default_factory=dict)
    # The gateway connections open now (the connected bots), of every server serving this.
    gateway_sessions: list[GatewaySession] = field(default_factory=list)
    _next_id: int = 0

    def __post_init__(self) -> None:
        if not self.bot_token:
            encoded_id = base64.b64encode(self.client_id.encode()).decode().rstrip("=")
            self.bot_token = f"{encoded_id}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        self.guilds.setdefault(TEST_GUILD_ID, Guild(TEST_GUILD_ID, "TaskFlow Test Server"))

    def reset(self) -> None:
        """Back to a new emulator's state, in place (a server serving this state serves the
        new one): no users, grants, tokens, sessions, interactions (nor their messages),
        faults, calls, commands, role metadata or connections; the test server alone, without
        members or roles of its own; every setting (deadlines, delays, limits, clock,
        ``interactions_url``) back to its default, and no redirect URIs. Kept: what
        ``KEPT_ON_RESET`` names. For tests that share one served emulator."""
        for each in fields(self):
            if each.name in KEPT_ON_RESET:
                continue
            if each.default is not MISSING:
                value: Any = each.default
            elif each.default_factory is not MISSING:
                value = each.default_factory()
            else:  # a field given at construction: redirect_uris
                value = type(getattr(self, each.name))()
            setattr(self, each.name, value)
        self.__post_init__()

    @property
    def test_guild(self) -> Guild:
        return self.guilds[TEST_GUILD_ID]

    def add_role(
        self,
        name: str,
        *,
        guild_id: str = TEST_GUILD_ID,
        position: int = 1,
        color: int = 0x5865F2,
        role_id: str | None = None,
    ) -> GuildRole:
        """A new role in a server (by default at the bottom, which the bot can manage)."""
        role = GuildRole(role_id or self.snowflake(), name, position, color)
        self.guilds[guild_id].roles[role.id] = role
        return role

    @property
    def public_key(self) -> str:
        """The hex Ed25519 key the service verifies interactions with."""
        return self.signing_key.verify_key.encode().hex()

    def snowflake(self) -> str:
        """A new id, made as Discord makes them: the time now in its upper bits (so an
        interaction's id tells the service when Discord created it), ever increasing, and
        apart from an earlier session's (whose ids a database may still hold)."""
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << SNOWFLAKE_TIME_SHIFT
        now += secrets.randbelow(1 << 20)  # the worker, process and increment bits
        self._next_id = max(self._next_id + secrets.randbelow(1000) + 1, now)
        return str(self._next_id)

    def sign(self, body: bytes, timestamp: str, key: SigningKey | None = None) -> str:
        """Discord's ``X-Signature-Ed25519`` (``key``: another one, to forge it)."""
        return (key or self.signing_key).sign(timestamp.encode() + body).signature.hex()

    def find_command(self, name: str, guild_id: str | None) -> dict[str, Any] | None:
        """What Discord would run: a server's own command first, then a global one."""
        scopes = ([guild_id] if guild_id else []) + ["global"]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        return None

    def add_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        email: str | None = None,
        verified: bool = False,
        user_id: str | None = None,
        member: bool = True,
        avatar: str | EllipsisType | None = ...,
    ) -> TestUser:
        """A test user, by default a member of the test server (where the channel is). Like
        most Discord users it has an avatar (a hash, as Discord gives it: 32 hex digits) unless
        ``avatar`` says otherwise (``None``: Discord's default one)."""
        if user_id is None:
            user_id = self.snowflake()
        if avatar is ...:
            avatar = secrets.token_hex(16)
        user = TestUser(user_id, username, global_name, avatar, email, verified)
        self.users[user.id] = user
        if member:
            self.test_guild.members.setdefault(user.id, set())
        return user

    def issue_code(
        self, user: TestUser, scopes: frozenset[str], redirect_uri: str, code_challenge: str | None
    ) -> str:
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(user.id, scopes, redirect_uri, code_challenge, time.time() + 600)
        return code

    def redeem_code(
        self, code: str, redirect_uri: str | None, verifier: str | None
    ) -> Grant | tuple[str, str]:
        """The grant, or the OAuth error code explaining the refusal and the field Discord's
        ``error_description`` names ('Invalid "<field>" in request.'). Codes work once."""
        grant = self.codes.pop(code, None)
        if grant is None or grant.expires_at < time.time():
            return "invalid_grant", "code"
        if redirect_uri != grant.redirect_uri:
            # Not the authorize request's (or none): Discord names the field, not the code.
            return "invalid_request", "redirect_uri"
        if grant.code_challenge is not None:
            if not verifier or not CODE_VERIFIER.fullmatch(verifier):
                return "invalid_request", "code_verifier"  # none, or not RFC 7636's shape
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not secrets.compare_digest(challenge, grant.code_challenge):
                return "invalid_grant", "code"
        return grant

    def issue_token(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(30)
        self.tokens[token] = grant
        self.token_expiry[token] = time.time() + self.access_token_lifetime
        return token

    def issue_refresh_token(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(30)
        self.refresh_tokens[token] = grant
        return token

    def grant_of(self, access_token: str) -> Grant | None:
        """The grant behind a live access token (``None`` once expired or revoked)."""
        grant = self.tokens.get(access_token)
        if grant is None or self.token_expiry.get(access_token, 0.0) <= time.time():
            return None
        return grant

    def refresh(self, refresh_token: str) -> Grant | None:
        """The refresh grant: a refresh token works once (rotation), and dies with its grant."""
        return self.refresh_tokens.pop(refresh_token, None)

    def expire_tokens(self, user_id: str) -> int:
        """End the user's access tokens now (their refresh tokens still work)."""
        ended = [t for t, g in self.tokens.items() if g.user_id == user_id]
        for token in ended:
            self.token_expiry[token] = 0.0
        return len(ended)

    def deauthorize(self, user_id: str) -> None:
        """The user removes the application in Discord's settings: every token and refresh
        token of the grant dies, and the role connection goes with it."""
        self.authorizations.pop(user_id, None)
        for table in (self.tokens, self.codes, self.refresh_tokens):
            for key in [k for k, g in table.items() if g.user_id == user_id]:
                del table[key]
        self.role_connections.pop(user_id, None)

    def authorize(self, user: TestUser, scopes: frozenset[str]) -> None:
        """The user pressed Authorize: Discord remembers the grant (scopes add up)."""
        self.authorizations[user.id] = self.authorizations.get(user.id, frozenset()) | scopes

    def already_granted(self, user_id: str | None, scopes: frozenset[str]) -> bool:
        return user_id is not None and scopes <= self.authorizations.get(user_id, frozenset())

    def sign_in_browser(self, user: TestUser) -> str:
        session = secrets.token_urlsafe(24)
        self.browser_sessions[session] = user.id
        return session

    def revoke(self, token: str) -> bool:
        """Revoking a token revokes the whole grant: the user's other tokens and codes, and
        the remembered authorization (the next sign-in shows the consent screen again). It is
        a deauthorization, as the user removing the app is (Discord sends both the same
        APPLICATION_DEAUTHORIZED event), so the role connection goes too."""
        grant = self.tokens.get(token) or self.refresh_tokens.get(token)
        if grant is None:
            return False
        self.deauthorize(grant.user_id)
        self.revoked.add(token)
        return True
