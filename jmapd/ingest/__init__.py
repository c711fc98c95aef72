# -*- test-case-name: tests.ingest -*-
"""
Mail delivery into jmapd: the LMTP listener an MTA hands messages to
(L{jmapd.ingest.lmtp}, started by L{jmapd.ingest.service.lmtp_service}),
the address-to-account resolution behind RCPT
(L{jmapd.ingest.recipients}) and the group-committing delivery queue that
files messages in the Inbox (L{jmapd.ingest.delivery}).
"""
