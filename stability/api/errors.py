"""The one exception of the Python API."""


class StudyError(Exception):
    """Bad input (a folder that holds no study, an invalid spec or value, a refused storage), said in
    one line: the command line's message, what follows its `error: `. Raised outside the handler of
    the error it reports, so no traceback from inside the package is chained to it."""
