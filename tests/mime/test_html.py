"""
Tests for L{jmapd.mime.html}: HTML to text for previews and search.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from jmapd.mime.html import html_to_text


class HTMLToTextTests(SynchronousTestCase):
    def test_hidden_content_dropped(self):
        """
        Script, style and head content are not text.
        """
        html = "<html><head><title>T</title><style>p{}</style></head><body><script>x<y</script>Body</body></html>"
        self.assertEqual(html_to_text(html), "Body")

    def test_presented_attributes(self):
        """
        With attributes (for search), alt and title values of shown
        elements are text where the element is; other attributes and
        hidden elements' attributes are not.  Without, they are left out.
        """
        html = (
            '<head><title>T</title><meta name="x" content="y" title="no"></head>'
            '<p title="tip">see <img src="c.png" alt="a  cat"/> <a href="http://x/">here</a></p>'
        )
        self.assertEqual(html_to_text(html, attributes=True), "tip see a cat here")
        self.assertEqual(html_to_text(html), "see here")

    def test_blocks_break_lines(self):
        """
        Block elements and br put their content on lines of their own;
        inline elements do not; blank lines are dropped.
        """
        html = "<div>one <b>bold</b></div><p>two</p><br><br><br><ul><li>a</li><li>b</li></ul>"
        self.assertEqual(html_to_text(html), "one bold\ntwo\na\nb")

    def test_entities_and_white_space(self):
        """
        Character references are decoded and runs of white space, including
        non-breaking spaces, collapse to one space.
        """
        self.assertEqual(html_to_text("A&nbsp;&amp;   &#233;\n\t&euro;"), "A & é €")

    def test_pre_kept(self):
        """
        White space in pre is kept.
        """
        self.assertEqual(html_to_text("<pre>a  b\n c</pre>"), "a  b\n c")

    def test_table_cells_separated(self):
        """
        Table cells are separated by white space.
        """
        self.assertEqual(html_to_text("<table><tr><td>a</td><td>b</td></tr></table>"), "a b")

    def test_malformed(self):
        """
        Broken markup does not raise and keeps what text it can.
        """
        self.assertEqual(
            html_to_text("<p>open <b>never closed <![if !supportLists]>x"), "open never closed x"
        )
        self.assertEqual(html_to_text("<<>>&;"), "<<>>&;")
        self.assertEqual(html_to_text(""), "")

    def test_unclosed_markup_is_text(self):
        """
        A tag after the last C{>}, and a comment or marked section that is
        never closed, are text up to the next C{>}, as the stdlib reads
        them; a marked section the stdlib rejects after the last C{>} is
        text too, instead of an error that lost the rest.
        """
        self.assertEqual(html_to_text("<p>a</p>b<a<b"), "a\nb<a<b")
        self.assertEqual(html_to_text("x<!--y>z<!--w>v"), "x<!--y>z<!--w>v")
        self.assertEqual(html_to_text("a<![CDATA[b>c"), "a<![CDATA[b>c")
        self.assertEqual(html_to_text("<p>a</p><![foo[b"), "a\n<![foo[b")

    def test_unclosed_markup_in_linear_time(self):
        """
        100 KB of start tags with no C{>} after them, or of comments never
        closed, take well under a second each: the stdlib parser searched
        to the end of the document for each one (29 and 7 seconds).
        """
        for html in ("<a" * 50_000, "<!--x>" * 20_000):
            started = time.perf_counter()
            text = html_to_text(html)
            self.assertLess(time.perf_counter() - started, 3.0, html[:6])
            self.assertEqual(text, html)
