"""HTTP adapters (aiohttp): live media routes, operations endpoints; later API and pages."""
