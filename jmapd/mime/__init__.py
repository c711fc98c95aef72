# -*- test-case-name: tests.mime -*-
"""
MIME for jmapd, free of storage and transport: parse a raw message once at
ingest into a JSON-serialisable description (L{parse}), serve header forms
(L{headers}) and body values (L{body}) from it, turn HTML into text
(L{html}), and build the message of an Email/set create (L{build}).
"""
