"""Where production keeps its static files."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """whitenoise's compressed files with hashed names, cached for a year, and ES module imports rewritten to
    those names too: the drawing page's main.js imports ./canvas.js and its siblings, and without the rewrite
    a browser holding the new main.js would fetch whatever unhashed canvas.js its cache or a CDN still has
    from the previous deploy."""

    support_js_module_import_aggregation = True
