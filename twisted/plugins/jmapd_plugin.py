# -*- test-case-name: tests.test_tap -*-
"""
The twistd plugin: C{twistd -n jmapd --config FILE}.  Only a name here;
L{jmapd.tap} is imported when twistd runs the plugin, not when it lists
plugins.
"""

from twisted.application.service import ServiceMaker

jmapd = ServiceMaker("jmapd", "jmapd.tap", "A JMAP mail server (RFC 8620, RFC 8621).", "jmapd")
