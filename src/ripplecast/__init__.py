"""Ripplecast: a streaming media system. RTMP in; HTTP-FLV, RTMP and HLS out."""

__version__ = "0.1.0"
