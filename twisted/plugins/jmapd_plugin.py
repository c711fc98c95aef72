from twisted.application.service import ServiceMaker

jmapd = ServiceMaker("jmapd", "jmapd.tap", "A JMAP mail server (RFC 8620, RFC 8621).", "jmapd")
