"""Exceptions that lqv-d4rl raises for bad input, each with a message that says what to do."""


class LQVError(Exception):
    """Base class of every error lqv-d4rl raises on purpose."""


class UnknownTaskError(LQVError, ValueError):
    """A task name that is not one of the benchmark's tasks."""


class UnknownDatasetError(LQVError, ValueError):
    """A dataset id that is not in the registry."""


class DatasetNotFoundError(LQVError, FileNotFoundError):
    """A known dataset that is not on disk (generate or download it)."""


class DatasetExistsError(LQVError, FileExistsError):
    """Refusing to overwrite a finished dataset without being asked to."""


class CorruptDatasetError(LQVError):
    """A shard or manifest that is truncated, unreadable, or fails its checksum."""


class ChecksumMismatchError(CorruptDatasetError):
    """A file whose sha256 differs from the one recorded in the manifest."""
