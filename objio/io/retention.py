"""Which checkpoints retention deletes: the rule and the policies as pure functions, no storage.

:class:`~objio.io.Checkpoint` lists its committed indices, reads the scores it needs, and asks
:meth:`RetentionPolicy.to_delete`. Keeping the decision here, away from any I/O, lets the tests try
every order of saves that racing jobs can produce.

The rule (issue 8): after checkpoint ``n`` is written, only committed checkpoints **older** than
``n`` may be deleted. A zombie job that writes an old index never deletes a newer checkpoint, and of
two jobs saving side by side, the newest checkpoint always survives. Among the older ones, a
checkpoint is kept when any policy keeps it:

- ``keep_ckpts=k``: the ``k`` newest committed checkpoints (``None`` or ``0`` keeps everything, as in
  Objax, and then no other policy matters);
- ``keep_period=p``: every checkpoint whose index is a multiple of ``p``;
- ``keep_best=b``: the ``b`` best by their score (a number in their metadata under ``best_key``,
  smallest first for ``best_mode='min'``, largest first for ``'max'``; on a tie the newer wins).
  A checkpoint without a usable score (missing, not a number, NaN) is never counted as best.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from numbers import Integral, Real
from typing import Any

__all__ = ["RetentionPolicy", "best_indices", "score_of"]

_MODES = ("min", "max")


def _count(name: str, value: Any, minimum: int) -> int | None:
    """``value`` as an int (a NumPy integer is fine; a bool or a float is not), checked against ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """What a :class:`~objio.io.Checkpoint` keeps; see the module docstring for the rule.

    >>> policy = RetentionPolicy(keep_ckpts=2, keep_period=10)
    >>> policy.to_delete([5, 10, 15, 20, 25], just_written=25)
    [5, 15]
    >>> policy.to_delete([5, 10, 15, 20, 25], just_written=15)  # a zombie's old index: nothing newer goes
    [5]
    """

    keep_ckpts: int | None = None
    keep_period: int | None = None
    keep_best: int | None = None
    best_key: str | None = None
    best_mode: str = "min"

    def __post_init__(self) -> None:
        for name, minimum in (("keep_ckpts", 0), ("keep_period", 1), ("keep_best", 1)):
            object.__setattr__(self, name, _count(name, getattr(self, name), minimum))  # frozen: set once here
        if self.best_mode not in _MODES:
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if self.best_key is not None and (not isinstance(self.best_key, str) or not self.best_key):
            raise ValueError(f"best_key must be a metadata key such as 'val_loss', got {self.best_key!r}")
        if self.keep_best is not None and self.best_key is None:
            raise ValueError("keep_best needs best_key: the metadata key to rank checkpoints by, such as 'val_loss'")

    @property
    def keeps_everything(self) -> bool:
        """Whether no checkpoint is ever deleted (``keep_ckpts`` is ``None`` or ``0``)."""
        return not self.keep_ckpts

    @property
    def needs_scores(self) -> bool:
        """Whether :meth:`to_delete` looks at scores (so the caller must read metadata)."""
        return self.keep_best is not None and not self.keeps_everything

    def to_delete(
        self, indices: Collection[int], just_written: int, scores: Mapping[int, float] | None = None
    ) -> list[int]:
        """The indices to delete after ``just_written`` was saved, oldest first.

        :param indices: the committed checkpoints, as listed after the save (in any order).
        :param just_written: the index this process has just saved.
        :param scores: usable scores (see :func:`score_of`) by index; needed when :attr:`needs_scores`.
        """
        if self.keeps_everything:
            return []
        committed = set(indices) | {just_written}
        keep = set(sorted(committed)[-self.keep_ckpts :]) if self.keep_ckpts else set()
        if self.keep_period is not None:
            keep |= {i for i in committed if i % self.keep_period == 0}
        if self.keep_best is not None:
            known = {i: s for i, s in (scores or {}).items() if i in committed}
            keep |= set(best_indices(known, self.best_mode, self.keep_best))
        return sorted(i for i in committed if i < just_written and i not in keep)


def best_indices(scores: Mapping[int, float], mode: str, count: int) -> list[int]:
    """The ``count`` best indices by score, best first; on equal scores the newer index ranks higher.

    >>> best_indices({1: 0.5, 2: 0.3, 3: 0.3, 4: 0.9}, 'min', 2)
    [3, 2]
    >>> best_indices({1: 0.5, 4: 0.9}, 'max', 1)
    [4]
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(scores, key=lambda i: (sign * scores[i], -i))
    return ranked[:count]


def score_of(metadata: Mapping[str, Any] | None, key: str) -> float | None:
    """The number stored under ``key`` in a checkpoint's metadata, or ``None`` when there is none to rank by.

    Booleans, strings, missing keys and NaN are not scores: such a checkpoint is never the best.

    >>> score_of({'val_loss': 0.25}, 'val_loss'), score_of({'val_loss': float('nan')}, 'val_loss')
    (0.25, None)
    """
    if not metadata:
        return None
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return None if math.isnan(number) else number
