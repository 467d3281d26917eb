"""Exceptions the library raises; the CLI turns each into a one-line message and exit code 2."""


class JsqaError(Exception):
    """Base class for every error a user can act on."""


class ConfigError(JsqaError):
    """params.yaml (or a CLI override) is missing a key, has an unknown key or a bad value."""


class AudioError(JsqaError):
    """An audio file cannot be used: unreadable, empty, non-finite samples."""


class NoSpeechError(AudioError):
    """The audio holds no active speech to score (jsqa.signal.speech: silence, tones, very low level)."""


class ManifestError(JsqaError):
    """A manifest or CSV lacks a column or holds values it must not."""


class ValidationFailed(JsqaError):
    """A Great Expectations suite failed; the message lists the failed expectations."""


class DownloadError(JsqaError):
    """A download failed or its checksum did not match."""


class ArchiveError(JsqaError):
    """An archive is truncated, corrupt or unsafe."""


class StageFailed(JsqaError):
    """A pipeline stage exited non-zero; the message names it and ends with its output."""
