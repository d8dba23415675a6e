"""User-facing errors: one line that names the file, row, column or key."""


class EmbedlabError(Exception):
    """One-line user-facing error."""
