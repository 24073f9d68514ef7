"""RTMP: sans-I/O handshake, chunk stream and sessions; asyncio adapters in server.py and aio.py."""
