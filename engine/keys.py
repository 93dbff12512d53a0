"""Content keys: one canonical JSON and one hash for everything an output is keyed by.

A stage's output is reused only when the key of what made it matches; two spellings of the same
inputs must give the same key, so every key is hashed here: JSON with sorted keys, no spaces,
ASCII escapes, non-JSON values (paths) as their ``str``; SHA-256 in hex, cut to ``length``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_LENGTH = 16


def canonical_json(payload: Any) -> str:
    """The one serialisation content keys are hashed from."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(payload: Any, length: int = KEY_LENGTH) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``payload``, its first ``length`` characters."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:length]
