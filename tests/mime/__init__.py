"""
Tests for L{jmapd.mime}.
"""
