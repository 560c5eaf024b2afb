"""landmark.Error and its subclasses: one per status code of base/lmk_error.h, each carrying
the library's code (`code`) and message (`message`). Positive codes are errno values passed
through by the library (ErrnoError, also an OSError)."""
import os


class Error(Exception):
    """A failed landmark call: `code` is the library's status (lmk_error.h), `message` the
    handle's message."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self):
        return self.message


class InvalidError(Error, ValueError):
    """LMK_EINVAL: an argument is out of range or inconsistent (also bad shapes)."""
    code = -1001


class DtypeError(InvalidError, TypeError):
    """LMK_EINVAL raised by the binding: an array of a type that is not a float array."""


class UnsupportedError(Error):
    """LMK_EUNSUPPORTED: a valid request the build or backend cannot do (an index spec)."""
    code = -1002


class IndexBackendError(Error):
    """LMK_EINDEX: FAISS failed."""
    code = -1003


class StoreError(Error):
    """LMK_ESTORE: LMDB failed."""
    code = -1004


class CorruptError(Error):
    """LMK_ECORRUPT: stored data failed a check."""
    code = -1005


class VersionError(Error):
    """LMK_EVERSION: a file written by another format version."""
    code = -1006


class MismatchError(Error):
    """LMK_EMISMATCH: the session's shape or fingerprint differs from what was asked."""
    code = -1007


class BusyError(Error):
    """LMK_EBUSY: the session is open for writing elsewhere."""
    code = -1008


class NotFoundError(Error):
    """LMK_ENOTFOUND: no such session (open without create=True), key or object."""
    code = -1009


class ReadOnlyError(Error):
    """LMK_EREADONLY: a write on a read-only session."""
    code = -1010


class MapFullError(Error):
    """LMK_EMAPFULL: the LMDB map could not grow far enough."""
    code = -1011


class StateError(Error):
    """LMK_ESTATE: the call is not valid in the handle's state (also: the session is
    closed)."""
    code = -1012


class FormatError(Error):
    """LMK_EFORMAT: an input file is not of the expected format."""
    code = -1013


class ErrnoError(Error, OSError):
    """A system error passed through by the library: `code` (and `errno`) is the errno
    value."""

    def __init__(self, message, code):
        Error.__init__(self, message, code)
        self.errno = code
        self.strerror = os.strerror(code)

    def __str__(self):
        return self.message


_BY_CODE = {c.code: c for c in (InvalidError, UnsupportedError, IndexBackendError, StoreError,
                                 CorruptError, VersionError, MismatchError, BusyError,
                                 NotFoundError, ReadOnlyError, MapFullError, StateError,
                                 FormatError)}


def error_for(code, message):
    """The exception for a library status `code` with `message`."""
    if code > 0:
        return ErrnoError(message, code)
    cls = _BY_CODE.get(code)
    if cls is None:
        return Error(message, code)
    return cls(message, code)


__all__ = [n for n in dir() if n.endswith("Error") and not n.startswith("_")] + ["error_for"]
