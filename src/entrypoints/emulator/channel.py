"""A page that looks like a Discord channel, for trying the bot by hand (the demo's start page).

Pick a test user (or create one), type ``/link``, ``/unlink`` or ``/whoami``: the emulator sends
the signed interaction to the service, exactly as Discord would, and shows the bot's private
reply with its buttons. No JavaScript: plain forms and links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import MediaType, get, post
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Response

from entrypoints.emulator.bot_api import run_slash_command
from entrypoints.emulator.gateway import GatewaySession
from entrypoints.emulator.state import EmulatorState, GuildRole, TestUser

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
COMMANDS = ("link", "unlink", "whoami")
CHANNEL = "taskflow-test"
_USERNAME = re.compile(r"^[a-z0-9_.]{2,32}$")


@dataclass
class ChannelEntry:
    user_id: str
    command: str
    at: datetime
    reply: dict[str, Any] | None = None
    problem: str | None = None


def _markdown(text: str) -> str:
    """The little Markdown the bot uses: **bold**, `code`, line breaks, and \\-escapes."""
    html = escape(text)
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\\([\\*_`~|>#\[\]()-])", r"\1", html)
    return html.replace("\n", "<br>")


def _buttons(data: dict[str, Any]) -> str:
    out = []
    for row in data.get("components") or []:
        for button in row.get("components") or []:
            url = str(button.get("url") or "")
            if (
                button.get("type") == 2
                and button.get("style") == 5
                and urlsplit(url).scheme
                in (
                    "http",
                    "https",
                )
            ):
                out.append(
                    f'<a class="link-button" href="{escape(url)}" target="_blank" '
                    f'rel="noopener noreferrer">{escape(str(button.get("label", "Open")))} ↗</a>'
                )
    return f'<div class="buttons">{"".join(out)}</div>' if out else ""


def _entry_html(entry: ChannelEntry, user: TestUser) -> str:
    who = escape(user.global_name or user.username)
    asked = (
        f'<div class="msg"><div class="avatar">{escape(user.username[:1].upper())}</div>'
        f'<div><div class="meta"><strong>{who}</strong> <span class="time">'
        f"{entry.at:%H:%M:%S} UTC</span></div>"
        f'<div class="used">used <span class="cmd">/{escape(entry.command)}</span></div>'
        "</div></div>"
    )
    if entry.problem is not None:
        body = f'<div class="content problem">{escape(entry.problem)}</div>'
    else:
        data = (entry.reply or {}).get("data") or {}
        ephemeral = int(data.get("flags") or 0) & 64
        body = f'<div class="content">{_markdown(str(data.get("content") or ""))}</div>'
        body += _buttons(data)
        if ephemeral:
            body += '<div class="only-you">Only you can see this message</div>'
    answered = (
        '<div class="msg bot-reply"><div class="avatar bot">TF</div><div>'
        '<div class="meta"><strong>TaskFlow Link</strong> <span class="bot-tag">APP</span></div>'
        f"{body}</div></div>"
    )
    return f'<section class="entry">{asked}{answered}</section>'


def _roles_html(roles: list[GuildRole]) -> str:
    """A member's roles in the server, as Discord shows them: a dot of the role's colour and
    its name (@everyone and the bot's own role are not shown)."""
    pills = "".join(
        f'<span class="role" data-role-id="{escape(role.id)}">'
        f'<span class="dot" style="background:#{role.color:06x}"></span>{escape(role.name)}</span>'
        for role in roles
        if not role.managed and role.position > 0
    )
    return f'<span class="roles">{pills}</span>' if pills else ""


def _user_item(user: TestUser, current: TestUser | None, roles: list[GuildRole]) -> str:
    email = escape(user.email or "no email")
    if user.email:
        email += " · verified" if user.verified else " · not verified"
    selected = ' aria-current="true" class="current"' if current and current.id == user.id else ""
    return (
        f'<li data-user-id="{escape(user.id)}"><a href="/channel?user={escape(user.id)}"{selected}>'
        f"<strong>{escape(user.global_name or user.username)}</strong> "
        f'<span class="muted">@{escape(user.username)}<br>{email}</span>'
        f"{_roles_html(roles)}</a></li>"
    )


def _role_connection_html(state: EmulatorState, user: TestUser) -> str:
    """Linked Roles: the connection the service pushed for this user, as Discord's profile
    shows it (and where to connect, when the application has a verification URL)."""
    connection = state.role_connections.get(user.id)
    if connection is None:
        url = state.role_connections_verification_url
        return (
            f' <a href="{escape(url)}" target="_blank" rel="noopener">Connect TaskFlow ↗</a>'
            if url
            else ""
        )
    values = ", ".join(
        f"{escape(str(key))}: {escape(str(value))}"
        for key, value in sorted(dict(connection.get("metadata") or {}).items())
    )
    name = escape(str(connection.get("platform_name") or ""))
    username = connection.get("platform_username")
    shown_as = f" @{escape(str(username))}" if username else ""
    return f' <span class="muted">Connection: {name}{shown_as} ({values or "no values"})</span>'


STYLE = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;background:#313338;
color:#dbdee1;display:flex;min-height:100vh}a{color:#00a8fc}
nav{width:17rem;background:#2b2d31;padding:1rem;flex-shrink:0}
nav h1{font-size:1rem;margin:0;color:#f2f3f5}
nav h2{font-size:.75rem;text-transform:uppercase;color:#949ba4;margin:1.25rem 0 .5rem}
nav ul{list-style:none;margin:0;padding:0}nav li a{display:block;padding:.4rem .5rem;
border-radius:4px;color:#dbdee1;text-decoration:none}nav li a:hover{background:#35373c}
nav li a.current{background:#404249;color:#fff}
.muted{color:#949ba4;font-size:.85rem}
label{display:block;font-size:.8rem;color:#b5bac1;margin:.5rem 0 .2rem}
input[type=text],input[type=email]{width:100%;padding:.45rem;border-radius:4px;border:0;
background:#1e1f22;color:#dbdee1;font:inherit}
button{font:inherit;border:0;border-radius:4px;padding:.45rem .8rem;background:#5865f2;
color:#fff;cursor:pointer}button.secondary{background:#4e5058}
main{flex:1;display:flex;flex-direction:column;min-width:0}
header{padding:.75rem 1rem;border-bottom:1px solid #1f2023;font-weight:600;color:#f2f3f5}
header .topic{font-weight:400;color:#949ba4;margin-left:.5rem;font-size:.9rem}
.intro{margin:1rem;padding:1rem;background:#2b2d31;border-radius:8px}
.intro h2{font-size:1.1rem;margin:0 0 .5rem;color:#f2f3f5}
.intro ol{margin:.25rem 0;padding-left:1.25rem}
.log{flex:1;padding:0 1rem 1rem;overflow-y:auto}
.entry{margin:.75rem 0}.msg{display:flex;gap:.75rem;margin:.35rem 0}
.avatar{width:2.5rem;height:2.5rem;border-radius:50%;background:#5865f2;color:#fff;
display:flex;align-items:center;justify-content:center;font-weight:700;flex-shrink:0}
.avatar.bot{background:#23a559}.meta .time{color:#949ba4;font-size:.75rem}
.bot-tag{background:#5865f2;color:#fff;font-size:.65rem;padding:0 .3rem;border-radius:3px}
.used .cmd{color:#c9cdfb;background:#3c4270;padding:0 .25rem;border-radius:3px}
.content code{background:#1e1f22;padding:0 .2rem;border-radius:3px}
.problem{color:#fa777c}.only-you{color:#949ba4;font-size:.75rem;margin-top:.25rem}
.buttons{margin-top:.4rem;display:flex;gap:.5rem}
.link-button{background:#4e5058;color:#fff;padding:.4rem .9rem;border-radius:4px;
text-decoration:none;font-weight:500}.link-button:hover{background:#6d6f78}
form.composer{margin:0 1rem 1rem;display:flex;gap:.5rem;background:#383a40;border-radius:8px;
padding:.5rem}form.composer input{flex:1;background:transparent}
.suggest{margin:0 1rem .5rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.suggest button{background:#2b2d31;color:#dbdee1;padding:.25rem .6rem;font-size:.85rem}
.roles{display:flex;flex-wrap:wrap;gap:.25rem;margin-top:.25rem}
.role{display:inline-flex;align-items:center;gap:.3rem;background:#232428;color:#dbdee1;
font-size:.75rem;padding:.1rem .45rem;border-radius:4px}
.role .dot{width:.6rem;height:.6rem;border-radius:50%;display:inline-block}
@media (max-width:40rem){body{flex-direction:column}nav{width:auto}}
"""


def _page(
    state: EmulatorState,
    entries: list[ChannelEntry],
    current: TestUser | None,
    *,
    refused: str = "",
    typed: dict[str, str] | None = None,
) -> str:
    """The channel as ``current`` sees it; ``refused``: why the test user in ``typed`` (the
    form's fields, shown again) was not created."""
    typed = typed or {}
    guild = state.test_guild
    users = "".join(_user_item(u, current, guild.roles_of(u.id)) for u in state.users.values())
    mine = [e for e in entries if current and e.user_id == current.id]
    log = "".join(_entry_html(e, current) for e in mine if current)
    if current is None:
        composer = '<p class="intro">Choose a test user on the left to start.</p>'
    else:
        suggestions = "".join(
            f'<form method="post" action="/channel/send"><input type="hidden" name="user_id" '
            f'value="{escape(current.id)}"><input type="hidden" name="text" value="/{c}">'
            f'<button type="submit" class="suggest-{c}">/{c}</button></form>'
            for c in COMMANDS
        )
        composer = (
            f'<div class="suggest"><span class="muted">Commands:</span>{suggestions}</div>'
            '<form class="composer" method="post" action="/channel/send">'
            f'<input type="hidden" name="user_id" value="{escape(current.id)}">'
            f'<input type="text" name="text" id="composer" aria-label="Message #{CHANNEL}" '
            f'placeholder="Message #{CHANNEL} — type /link, /unlink or /whoami" autocomplete="off" '
            'required autofocus><button type="submit">Send</button></form>'
        )
    who = (
        f"You are <strong>{escape(current.global_name or current.username)}</strong>."
        + _role_connection_html(state, current)
        if current
        else "Pick who you are on the left."
    )
    services = ""
    if state.service_links:
        links = "".join(
            f'<li><a href="{escape(url)}" target="_blank" rel="noopener">{escape(label)} ↗</a></li>'
            for label, url in state.service_links.items()
        )
        services = f"<h2>Elsewhere in the demo</h2><ul>{links}</ul>"
    verified = " checked" if typed.get("verified") == "yes" else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>#{CHANNEL} · Discord emulator</title><style>{STYLE}</style></head><body>
<nav aria-label="Test users">
  <h1>TaskFlow Test Server</h1><div class="muted">Discord emulator</div>
  <h2>Discord test users</h2><ul>{users}</ul>
  <h2>Create a Discord test user</h2>
  <form method="post" action="/channel/users">
    {f'<p class="problem" role="alert">{escape(refused)}</p>' if refused else ""}
    <label for="username">Username</label>
    <input type="text" id="username" name="username" value="{escape(typed.get("username", ""))}"
      required pattern="[a-z0-9_.]{{2,32}}" placeholder="carol">
    <label for="email">Email (optional)</label>
    <input type="email" id="email" name="email" value="{escape(typed.get("email", ""))}"
      placeholder="carol@example.com">
    <label><input type="checkbox" name="verified" value="yes"{verified}> Discord verified this
      email</label>
    <p class="muted">A verified email that matches one confirmed TaskFlow account links to it at
      the first "Sign in with Discord"; an unverified one is never trusted.</p>
    <button type="submit" class="secondary">Create</button>
  </form>
  {services}
</nav>
<main>
  <header># {CHANNEL} <span class="topic">{who}</span></header>
  <div class="intro"><h2>Try the TaskFlow bot</h2><ol>
    <li>Type <code>/link</code>: the bot answers privately with a one-time button.</li>
    <li>The button opens TaskFlow: sign in (or create an account) and confirm. Linked!</li>
    <li><code>/whoami</code> shows the linked account; <code>/unlink</code> removes the link.</li>
    <li>On TaskFlow, "Sign in with Discord" then signs this user in to the same account.</li>
  </ol><p class="muted">This page stands in for Discord: it signs each command with the
    application's key and sends it to the service, as Discord does.</p></div>
  <div class="log" id="log">{log}</div>
  {composer}
</main></body></html>"""


def channel_routes(state: EmulatorState, gateway: list[GatewaySession]) -> list[HTTPRouteHandler]:
    entries: list[ChannelEntry] = []

    @get("/channel", sync_to_thread=False)
    def channel(user: FromQuery[str | None] = None) -> Response[str]:
        current = state.users.get(user or "")
        if current is None and user is None and state.users:
            current = next(iter(state.users.values()))
        return Response(_page(state, entries, current), media_type=MediaType.HTML)

    @post("/channel/send", status_code=303)
    async def send(data: Form) -> Response[Any]:
        user_id = data.get("user_id", "")
        if user_id not in state.users:
            return Redirect("/channel", status_code=303)
        text = data.get("text", "").strip()
        name = text.lstrip("/").split(" ", 1)[0].lower()
        entry = ChannelEntry(user_id, name or text, datetime.now(UTC))
        if not text.startswith("/") or name not in COMMANDS:
            entry.problem = (
                "This channel only runs the TaskFlow bot's commands: type /link, /unlink or "
                "/whoami."
            )
        else:
            status, body = await run_slash_command(state, gateway, user_id=user_id, command=name)
            if status != 200:
                entry.problem = str(body.get("error"))
            elif body.get("deleted"):
                entry.problem = "The application deleted its reply."
            elif body.get("reply") is None and body.get("errors"):
                refused = body["errors"][-1]
                entry.problem = (
                    "This interaction failed: Discord refused the application's answer "
                    f"({refused.get('code')} {refused.get('message')})."
                )
            elif body.get("reply") is None:
                entry.problem = "The application did not respond."
            else:
                entry.reply = body["reply"]
        entries.append(entry)
        del entries[:-200]
        return Redirect(f"/channel?user={user_id}#log", status_code=303)

    def refused(data: dict[str, str], why: str, status: int) -> Response[str]:
        """The channel again, with why and what was typed in the new user's form."""
        current = next(iter(state.users.values()), None)
        page = _page(state, entries, current, refused=why, typed=data)
        return Response(page, media_type=MediaType.HTML, status_code=status)

    @post("/channel/users", status_code=303)
    async def create(data: Form) -> Response[Any]:
        username = data.get("username", "").strip().lower()
        if not _USERNAME.fullmatch(username):
            why = (
                "A test user's name is 2 to 32 characters: lower-case letters, digits, '_' "
                "or '.'. Try another."
            )
            return refused(data, why, 400)
        if any(u.username == username for u in state.users.values()):
            why = f"There is already a test user @{username}. Choose another name."
            return refused(data, why, 409)
        email = data.get("email", "").strip() or None
        user = state.add_user(
            username, email=email, verified=bool(email) and data.get("verified") == "yes"
        )
        return Redirect(f"/channel?user={user.id}", status_code=303)

    return [channel, send, create]
