"""
Tests for L{jmapd.mime.html}: HTML to text for previews and search.
"""

from __future__ import annotations

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
