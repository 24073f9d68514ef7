"""Sans-I/O media formats: AMF0, FLV, AVC/HEVC/AAC headers, MPEG-TS and the neutral packet.

Nothing here touches sockets, asyncio, clocks or logging; everything is bytes in, objects or bytes
out, so every parser can be fed whole, byte by byte, or fuzzed.
"""
