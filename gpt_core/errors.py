"""What gpt_core's one-line errors share."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """What a one-line message quotes of an exception: its first line of text, cut to `limit`
    characters, or its type's name when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
