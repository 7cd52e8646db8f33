"""A local stand-in for Discord: OAuth2 (consent page, token, /users/@me, revoke) and a
test API. Tests drive the service's real Discord adapter against it over real HTTP."""

from entrypoints.emulator.app import create_emulator_app
from entrypoints.emulator.state import EmulatorState, TestUser

__all__ = ["EmulatorState", "TestUser", "create_emulator_app"]
