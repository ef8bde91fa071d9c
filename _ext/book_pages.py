"""A Sphinx extension of this book's website.

- The getting-started and appendix pages (``book/``) offer no Colab button: they read files of the
  repository (run times, results, benchmark records) that a notebook opened alone in Colab does not
  have. The chapters, which install ``cnn_book`` in their first cell, keep theirs.
- Every script is included once. sphinx-thebe and sphinx-togglebutton add their inline scripts at
  an event that Jupyter Book's build reaches twice, so every page declared ``THEBE_JS_URL`` twice
  and the browser logged "Identifier 'THEBE_JS_URL' has already been declared" on each page.
"""


def _drop_launch_buttons(app, pagename, templatename, context, doctree):
    if pagename.startswith("book/") and "header_buttons" in context:
        context["header_buttons"][:] = [b for b in context["header_buttons"] if b.get("label") != "launch-buttons"]


def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    filename = getattr(js, "filename", js) or ""  # an inline script's is None or "", as it was added
    return str(filename), str(attributes.get("body", "")), attributes.get("async")


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = context.get("script_files"), set()
    if scripts is None:
        return
    unique = []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    # after sphinx-book-theme has added the buttons and the extensions their scripts (priority 501)
    app.connect("html-page-context", _drop_launch_buttons, priority=900)
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
