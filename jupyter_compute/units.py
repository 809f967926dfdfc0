"""Sizes and durations, as people write and read them: one grammar, one base.

::

    parse_size("4g") == parse_size("4GiB") == parse_size("4 GB") == 4 * 1024**3
    format_size(2187)          # "2.1 KiB"
    parse_duration("1h30m")    # 5400.0; "90s", "5m", "2.5h", 90 and "90" (seconds) too
    format_duration(125)       # "2m05s"

Sizes use powers of 1024 throughout, as Docker, Ray and the kernel count memory:
``k``, ``m``, ``g``, ``t`` (case-insensitive, an optional ``i`` and ``b`` after
them, so ``512m``, ``512MB`` and ``512MiB`` are the same), and they are printed
with the binary names (KiB, MiB, GiB, TiB) so nobody reads them as powers of 1000.
"""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])i?b?|b?)\s*", re.IGNORECASE)
_SCALE = {None: 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE_NAMES = ("B", "KiB", "MiB", "GiB", "TiB")
_DURATION = re.compile(r"\s*(?:([0-9]*\.?[0-9]+)\s*h)?\s*(?:([0-9]*\.?[0-9]+)\s*m)?"
                       r"\s*(?:([0-9]*\.?[0-9]+)\s*s?)?\s*", re.IGNORECASE)


def parse_size(text: str | float) -> int:
    """``"4g"`` → ``4294967296``: bytes, from a number with an optional k/m/g/t unit.

    A plain number is bytes. Raises ``ValueError`` naming the value and the grammar.

    >>> parse_size("512m"), parse_size("1.5GB"), parse_size(1024)
    (536870912, 1610612736, 1024)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        number, unit = float(text), None
    else:
        match = _SIZE.fullmatch(str(text))
        if not match:
            raise ValueError(f"invalid size {text!r}: use a number with an optional unit "
                             "k, m, g or t (powers of 1024), e.g. 512m or 4g")
        number, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"invalid size {text!r}: it must be a finite number of bytes, 0 or more")
    return int(number * _SCALE[unit.lower() if unit else None])


def parse_size_option(value: Any, option: str) -> int | None:
    """A positive size given for ``option`` (``--memory 4g``), in bytes; None if not given.

    >>> parse_size_option("1.5g", "--memory")
    1610612736
    """
    if value is None or value == "":
        return None
    try:
        size = parse_size(value)
    except ValueError:
        size = 0
    if size <= 0:
        from jupyter_compute.exceptions import UsageError

        raise UsageError(f"{option} must be a size like 512m or 4g, not {value!r}")
    return size


def format_size(n: float) -> str:
    """``2187`` → ``"2.1 KiB"``: bytes in the largest binary unit below them.

    >>> format_size(512), format_size(3 * 1024**2)
    ('512 B', '3.0 MiB')
    """
    size = float(n)
    for name in _SIZE_NAMES:
        if abs(size) < 1024 or name == _SIZE_NAMES[-1]:
            return f"{size:.0f} {name}" if name == "B" else f"{size:.1f} {name}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_duration(text: str | float) -> float:
    """``"1h30m"`` → ``5400.0``: seconds, from ``h``/``m``/``s`` parts or a plain number.

    A plain number (or one ending in ``s``) is seconds. Raises ``ValueError`` for
    anything else, and for negative, infinite or NaN values.

    >>> parse_duration("90s"), parse_duration("5m"), parse_duration("1h30m"), parse_duration(2)
    (90.0, 300.0, 5400.0, 2.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text))
        if not match or not any(match.groups()):
            raise ValueError(f"invalid duration {text!r}: use seconds (90, 90s) or parts "
                             "with h, m and s, e.g. 5m or 1h30m")
        if match.group(3) and (match.group(1) or match.group(2)) \
                and str(text).rstrip()[-1:] not in "sS":
            raise ValueError(f"invalid duration {text!r}: end the seconds with s, e.g. 1m30s")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: it must be a finite number of "
                         "seconds, 0 or more")
    return seconds


def format_duration(seconds: float) -> str:
    """``125`` → ``"2m05s"``: tenths of a second under a minute, then m+s, then h+m.

    >>> format_duration(4.25), format_duration(125), format_duration(3725)
    ('4.2s', '2m05s', '1h02m')
    """
    secs = max(0.0, float(seconds))
    if secs < 60:
        return f"{secs:.1f}s"
    minutes, rest = divmod(int(secs), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
