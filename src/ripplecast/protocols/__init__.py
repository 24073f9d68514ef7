"""Protocol cores (sans-I/O) and their thin asyncio adapters."""
