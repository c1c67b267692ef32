"""Video names read from metadata files are data, never paths.

Annotation CSVs, video-info CSV/JSON, classifier and ground-truth files name videos, and some
of those names are later joined to a folder the user gave (``<folder>/<video>.npy``,
``<video_dir>/<video>.mp4``). A name is accepted only if that join stays inside the folder,
whatever the platform: one plain file name. Everything else a file name may hold (spaces,
dots inside, unicode, a leading ``~`` or ``-``: ``Path`` never expands them) is accepted.
"""

from __future__ import annotations

import string

from afsd_cli.errors import InputError

#: Longest excerpt of a refused name shown in a message (the file may hold megabytes in one field).
SHOWN_NAME_CHARS = 120


def name_problem(name: str) -> str | None:
    """Why ``name`` is not one plain file name, or None when it is."""
    if name == "":
        return "it is empty"
    if name in (".", ".."):
        return "it names a folder"
    if "\0" in name:
        return "it contains a NUL character"
    for separator in ("/", "\\"):
        if separator in name:
            return f"it contains {separator!r}"
    # Windows joins "C:x" as drive-relative, leaving the folder; refused on every platform so
    # a file behaves the same everywhere.
    if len(name) >= 2 and name[1] == ":" and name[0] in string.ascii_letters:
        return "it starts with a drive letter"
    return None


def check_video_name(name: object, source: str, place: str) -> str:
    """``name`` if it is one plain file name; otherwise ``InputError`` naming ``source`` (the
    file) and ``place`` (e.g. ``line 4``, ``entry 2``)."""
    if not isinstance(name, str):
        raise InputError(f"{place}: video name must be a string, got {type(name).__name__}", source)
    problem = name_problem(name)
    if problem is not None:
        raise InputError(f"{place}: video name {shown_name(name)} is not a plain file name ({problem})", source)
    return name


def shown_name(name: str) -> str:
    """``repr`` of the name (non-printable characters escaped), cut to a bounded length."""
    if len(name) > SHOWN_NAME_CHARS:
        return repr(name[:SHOWN_NAME_CHARS]) + f"... ({len(name)} characters)"
    return repr(name)


#: ActivityNet's video files are ``v_<youtube id>``; its ground truth, classifier file and the
#: official result files name the video by the id alone (official ``anet/test.py``: ``video_name[2:]``).
ANET_FILE_PREFIX = "v_"


def without_v_prefix(video: str) -> str:
    """The ActivityNet id of a video file stem: ``video`` without a leading ``v_``."""
    return video[len(ANET_FILE_PREFIX):] if video.startswith(ANET_FILE_PREFIX) else video


def video_id_spellings(video: str) -> tuple[str, ...]:
    """The keys a file may use for ``video``, best first: as given, without ``v_``, with ``v_``."""
    spellings = [video, without_v_prefix(video), ANET_FILE_PREFIX + video]
    return tuple(dict.fromkeys(spellings))
