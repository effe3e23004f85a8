"""What a model call cost: a price table per model, in US dollars per million tokens, that the user can set.

``AGENTLOG_PRICES_FILE`` names a JSON file ``{"model prefix": [input per 1M, output per 1M], ...}``; the longest
prefix of a model's name that the table has gives its prices, and a model it does not know costs 0.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Mapping

from agentlog.schemas.errors import ConfigError

DEFAULT: Mapping[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}


class Prices:
    def __init__(self, table: Mapping[str, tuple[float, float]]) -> None:
        self.table = dict(table)
        self._prefixes = sorted(self.table, key=len, reverse=True)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        name = model.lower()
        for prefix in self._prefixes:
            if name.startswith(prefix.lower()):
                per_in, per_out = self.table[prefix]
                return round((input_tokens * per_in + output_tokens * per_out) / 1e6, 9)
        return 0.0

    @classmethod
    def load(cls, path: Path) -> "Prices":
        try:
            data = json.loads(path.read_text())
            table = {str(k): (float(v[0]), float(v[1])) for k, v in data.items()}
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a price table ({exc}); write "
                              '{"model prefix": [dollars per 1M input tokens, per 1M output tokens]}') from exc
        for name, (per_in, per_out) in table.items():
            if not (0 <= per_in < 1e6 and 0 <= per_out < 1e6) or math.isnan(per_in + per_out):
                raise ConfigError(f"{path}: the prices of {name!r} must be finite numbers from 0")
        return cls(table)


@functools.cache
def default_prices() -> Prices:
    path = os.environ.get("AGENTLOG_PRICES_FILE")
    return Prices.load(Path(path)) if path else Prices(DEFAULT)
