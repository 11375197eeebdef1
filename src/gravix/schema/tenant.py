"""The tenant-name rule: 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit.

A tenant's name is part of every object key (``tenant=<t>``,
:mod:`gravix.schema.layout`), so every stage that takes one from a person (an
API key, a user, a retention setting) checks it against this one rule.
"""

from __future__ import annotations

import re
from typing import Final

TENANT_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
