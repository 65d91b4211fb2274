"""Update result codes 0-19 of the GENIVI SWM specification, parsed by the 2016 rules."""

from __future__ import annotations

import enum

from .._errors import ProtocolError

__all__ = ["ResultCode"]


class ResultCode(enum.IntEnum):
    """The result of an install attempt, sent in ``SendUpdateReport``.

    Core counts 0 and 1 as success and everything else as failure.
    """

    OK = 0
    ALREADY_PROCESSED = 1
    DEPENDENCY_FAILURE = 2
    VALIDATION_FAILED = 3
    INSTALL_FAILED = 4
    UPGRADE_FAILED = 5
    REMOVAL_FAILED = 6
    FLASH_FAILED = 7
    CREATE_PARTITION_FAILED = 8
    DELETE_PARTITION_FAILED = 9
    RESIZE_PARTITION_FAILED = 10
    WRITE_PARTITION_FAILED = 11
    PATCH_PARTITION_FAILED = 12
    USER_DECLINED = 13
    SOFTWARE_BLACKLISTED = 14
    DISK_FULL = 15
    NOT_FOUND = 16
    OLD_VERSION = 17
    INTERNAL_ERROR = 18
    GENERAL_ERROR = 19

    @property
    def description(self) -> str:
        """The human description from the client guide's table."""
        return _DESCRIPTIONS[self]

    @property
    def is_success(self) -> bool:
        """True for the codes Core records as a finished update (OK, ALREADY_PROCESSED)."""
        return self in (ResultCode.OK, ResultCode.ALREADY_PROCESSED)

    @classmethod
    def parse(cls, value: ResultCode | int | str) -> ResultCode:
        """Read a code from its number or its name, case-insensitively, as the 2016 client did.

        ``ok``, ``Ok``, ``4`` and ``INSTALL_FAILED`` are accepted; ``20``, ``-1``, ``+1``,
        ``00`` and the empty string are not.

        :raises ProtocolError: the value names no result code.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise ProtocolError(f"unknown result code {value!r}: expected 0-19 or a name")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ProtocolError(
                    f"unknown result code {value}: expected a number from 0 to 19"
                ) from None
        if isinstance(value, str):
            code = _BY_TEXT.get(value.upper())
            if code is None:
                raise ProtocolError(
                    f"unknown result code {value!r}: expected 0-19 or a name such as OK, "
                    "INSTALL_FAILED or GENERAL_ERROR"
                )
            return code
        raise ProtocolError(f"unknown result code {value!r}: expected an int or a str")


_DESCRIPTIONS: dict[ResultCode, str] = {
    ResultCode.OK: "Operation executed successfully",
    ResultCode.ALREADY_PROCESSED: "Operation has already been processed",
    ResultCode.DEPENDENCY_FAILURE: "Dependency failure during package install, upgrade, or removal",
    ResultCode.VALIDATION_FAILED: "Update image integrity has been compromised",
    ResultCode.INSTALL_FAILED: "Package installation failed",
    ResultCode.UPGRADE_FAILED: "Package upgrade failed",
    ResultCode.REMOVAL_FAILED: "Package removal failed",
    ResultCode.FLASH_FAILED: "The module loader could not flash its managed module",
    ResultCode.CREATE_PARTITION_FAILED: "Partition creation failed",
    ResultCode.DELETE_PARTITION_FAILED: "Partition deletion failed",
    ResultCode.RESIZE_PARTITION_FAILED: "Partition resize failed",
    ResultCode.WRITE_PARTITION_FAILED: "Partition write failed",
    ResultCode.PATCH_PARTITION_FAILED: "Partition patching failed",
    ResultCode.USER_DECLINED: "User declined the update",
    ResultCode.SOFTWARE_BLACKLISTED: "Software was blacklisted",
    ResultCode.DISK_FULL: "Ran out of disk space",
    ResultCode.NOT_FOUND: "Software package not found",
    ResultCode.OLD_VERSION: "Tried to downgrade to older version",
    ResultCode.INTERNAL_ERROR: "SWM Internal integrity error",
    ResultCode.GENERAL_ERROR: "Other error",
}

# The 2016 parser upper-cased the text and compared it with each code's decimal string and name.
_BY_TEXT: dict[str, ResultCode] = {
    **{str(code.value): code for code in ResultCode},
    **{code.name: code for code in ResultCode},
}
