"""The pack's one error type. Every failure a user can cause or fix (a missing or wrong file, bad input, a
checkpoint that does not fit) is raised as a GeoDreamError whose message says what is wrong and what to do; nodes
and the headless runner show that message as it is, so no traceback from deep inside a library reaches the user."""


class GeoDreamError(Exception):
    """A failure the user can act on; the message names the file, folder, input or command concerned."""
