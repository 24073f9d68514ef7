"""A `Directory` backed by the settings' stream keys: the embedded default until the database
holds channels. Each configured key publishes one public channel named after its stream."""

from __future__ import annotations

from collections.abc import Mapping

from ripplecast.accounts.credentials import keyed_hash
from ripplecast.accounts.policy import ChannelInfo, Principal, StreamKeyInfo, Visibility

SETTINGS_OWNER = 0
"""Owner id of channels that come from settings (no account owns them)."""


class SettingsDirectory:
    """Channels and stream keys from `Settings.stream_keys`; no sessions or API tokens."""

    def __init__(self, stream_keys: Mapping[str, str], *, secret: bytes) -> None:
        self._channels = {
            name: ChannelInfo(name, SETTINGS_OWNER, Visibility.PUBLIC)
            for name in stream_keys.values()
        }
        self._keys = {
            keyed_hash(secret, key): StreamKeyInfo(self._channels[name])
            for key, name in stream_keys.items()
        }

    async def channel(self, slug: str) -> ChannelInfo | None:
        return self._channels.get(slug)

    async def stream_key(self, key_hash: str) -> StreamKeyInfo | None:
        return self._keys.get(key_hash)

    async def session(self, session_hash: str) -> Principal | None:
        return None

    async def api_token(self, token_hash: str) -> Principal | None:
        return None
