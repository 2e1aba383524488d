"""The base class of every model plugin (hloc style): a named default config merged with the user's."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch


class BaseModel(torch.nn.Module):
    """A ``torch.nn.Module`` configured by a dict.

    Subclasses set ``default_conf`` and implement ``_init(conf)`` (build the layers) and ``forward``.
    Keys of ``conf`` that are not in ``default_conf`` raise ``ValueError``, so typos never pass silently.
    """

    default_conf: ClassVar[dict[str, Any]] = {}
    conf: dict[str, Any]

    def __init__(self, conf: dict[str, Any] | None = None):
        super().__init__()
        conf = dict(conf or {})
        unknown = sorted(set(conf) - set(self.default_conf))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown config key(s) {unknown}; known: {sorted(self.default_conf)}"
            )
        self.conf = {**copy.deepcopy(self.default_conf), **conf}
        self._init(self.conf)

    def _init(self, conf: dict[str, Any]) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
