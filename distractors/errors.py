"""Errors raised for background sources that cannot be used."""


class VideoSourceError(ValueError):
    """A background video source that cannot be turned into a frame pool.

    Raised for an empty folder, a folder without video files, a glob that matches nothing, or a
    set of files none of which OpenCV can decode. The message names the path and says what to do.
    """


class VideoSourceNotFoundError(VideoSourceError, FileNotFoundError):
    """A background video path that does not exist (also a ``FileNotFoundError``)."""
