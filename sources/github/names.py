"""GitHub's rule for organisation logins: the one place an organisation name is checked.

Logins are case-insensitive on GitHub, so an organisation is lower-cased here, once: `Acme` and
`acme` are one dlt pipeline, one landing path (`org=acme`) and one set of warehouse rows.
"""

from __future__ import annotations

import re

# Letters, digits and single hyphens, neither first nor last; at most 39 characters.
ORG_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")


def normalise_org(org: str) -> str:
    """The organisation's login, lower-cased; ValueError naming it when it is not a login."""
    if not isinstance(org, str) or not ORG_LOGIN.fullmatch(org.strip()):
        raise ValueError(f"invalid organisation {org!r}: not a GitHub login (letters, digits and single hyphens, at most 39)")
    return org.strip().lower()
