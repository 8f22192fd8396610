"""The one escaping helper for user-supplied text shown as Markdown."""

from ui.messages import md


def test_a_markdown_image_in_a_name_becomes_plain_characters():
    assert md("![x](http://host/b.png)") == r"\!\[x\]\(http\:\/\/host\/b\.png\)"


def test_a_link_emphasis_and_streamlit_directives_are_escaped():
    out = md("[link](u) **bold** :red[x] $a$")
    for raw in ("[link]", "**", ":red[", "$a$"):
        assert raw not in out


def test_line_breaks_cannot_start_a_new_markdown_block():
    assert "\n" not in md("ana\n# heading")


def test_plain_names_stay_readable():
    assert md("ana") == "ana"
