"""Safe output writing for the tools: never overwrite an input, never leave
a half-written file.

Every tool output goes through :func:`atomic_write`: the data is written to
a temporary file in the destination folder and moved onto the destination
with :func:`os.replace` (atomic on POSIX), so an interrupted run leaves
either the old file or the new one. :func:`refuse_same_file` refuses a
destination that is the same file as an input (same path, or a hard or
symbolic link to it).
"""
import contextlib
import os
import os.path as osp
import tempfile
from typing import Iterable, Iterator, Union

PathLike = Union[str, os.PathLike]


class OverwriteInputError(ValueError):
    """An output path names (or would replace) one of the inputs."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file or folder.

    Existing paths are compared with :func:`os.path.samefile` (catches hard
    and symbolic links); otherwise their resolved real paths are compared.

    Args:
        a (str | PathLike): First path.
        b (str | PathLike): Second path.

    Returns:
        bool: True when both name the same file.
    """
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.realpath(a) == osp.realpath(b)


def refuse_same_file(src: Union[PathLike, Iterable[PathLike]],
                     dst: PathLike, what: str = 'output') -> None:
    """Raise if ``dst`` is the same file as ``src`` (or one of them).

    Args:
        src (str | PathLike | Iterable): Input path(s).
        dst (str | PathLike): Output path.
        what (str): Name of the output in the message.
            Defaults to 'output'.

    Raises:
        OverwriteInputError: If ``dst`` names an input.
    """
    srcs = [src] if isinstance(src, (str, os.PathLike)) else list(src)
    for s in srcs:
        if same_file(s, dst):
            raise OverwriteInputError(
                f'The {what} {os.fspath(dst)!r} is the input '
                f'{os.fspath(s)!r}; refusing to overwrite it. Choose another '
                f'{what} path.')


@contextlib.contextmanager
def atomic_write(dst: PathLike, suffix: str = '') -> Iterator[str]:
    """Yield a temporary path next to ``dst``; move it onto ``dst`` on
    success, delete it on failure.

    The destination folder is created. The temporary file is in the same
    folder so the final :func:`os.replace` is a rename on one file system.

    Args:
        dst (str | PathLike): Final path.
        suffix (str): Suffix of the temporary file (some writers pick the
            format from it). Defaults to ''.

    Yields:
        str: Temporary path to write to.
    """
    dst = os.fspath(dst)
    if osp.isdir(dst):
        raise IsADirectoryError(f'Output {dst!r} is a folder; give a file '
                                'name.')
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{osp.basename(dst)}.', suffix=suffix + '.tmp', dir=folder)
    os.close(fd)
    try:
        # mkstemp makes the file 0600; give it the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.unlink(tmp)


__all__ = ['OverwriteInputError', 'same_file', 'refuse_same_file',
           'atomic_write']
