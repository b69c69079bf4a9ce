"""The check every config section runs on its values."""


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition`: the loader turns it into an error naming the file."""
    if not condition:
        raise ValueError(message)
