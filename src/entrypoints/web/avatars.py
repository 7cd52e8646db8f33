"""Discord avatars on our pages: images from Discord's CDN
(https://discord.com/developers/docs/reference#image-formatting), which serves sizes that are
powers of two from 16 to 4096 and answers anything else with an error."""

from __future__ import annotations

from entrypoints.web.security import origin

AVATAR_SIZE = 128  # shown at 48 CSS pixels: sharp on screens of up to 2.5x


class Avatars:
    def __init__(self, cdn_url: str, *, size: int = AVATAR_SIZE) -> None:
        if not (16 <= size <= 4096 and size & (size - 1) == 0):
            raise ValueError(f"Discord's CDN serves powers of two from 16 to 4096, not {size}")
        self._cdn = cdn_url.rstrip("/")
        self._size = size

    @property
    def origin(self) -> str:
        """What the Content-Security-Policy must allow images from."""
        return origin(self._cdn)

    def url(self, discord_id: int, avatar: str | None) -> str | None:
        """The avatar's URL (a static PNG, also for an animated ``a_`` one), or ``None`` for
        someone without one (or a hash that is not one)."""
        if not avatar or not avatar.replace("_", "").isalnum():
            return None
        return f"{self._cdn}/avatars/{discord_id}/{avatar}.png?size={self._size}"
