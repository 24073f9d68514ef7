"""The edge role: live streams pulled from their origins (`pull`), mirrored into the local hub."""
