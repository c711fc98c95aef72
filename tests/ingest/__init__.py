"""
Tests for L{jmapd.ingest}: LMTP delivery.
"""
