"""The error a learner can cause and fix (bad data, wrong path, unknown name). CLI prints it without a traceback
and exits 2; notebooks show the message. Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import errno
import functools
import sys


class TunebookError(Exception):
    exit_code = 2


# File-system faults a learner causes and fixes, whichever command meets them: one message, not a traceback.
_OS_FIXES = {
    errno.EROFS: "read-only file system: choose a folder you can write to",
    errno.EACCES: "permission denied: choose a folder you own, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you own, or fix its permissions",
    errno.ENOSPC: "the disk is full: free some space (old runs, ~/.cache) and run the same command again",
    errno.EDQUOT: "your disk quota is used up: free some space and run the same command again",
    errno.EISDIR: "that is a folder: give a file path",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists, or a file is in the way where a folder is needed: choose another path",
    errno.ENAMETOOLONG: "the path is too long",
}


def learner_os_error(err: OSError) -> TunebookError | None:
    """The OSError as a TunebookError naming the path and the fix, or None for faults that are bugs."""
    fix = _OS_FIXES.get(err.errno)
    if fix is None:
        return None
    where = err.filename if err.filename is not None else "a file"
    return TunebookError(f"{where}: {fix}")


def command(main):
    """A CLI entry point `main(argv) -> exit code` that prints learner errors in one line and returns 2."""
    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return int(main(argv) or 0)
        except TunebookError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except OSError as err:
            explained = learner_os_error(err)
            if explained is None:
                raise
            print(f"error: {explained}", file=sys.stderr)
            return explained.exit_code
    return run
