"""The organisation's teams and their members, where the credentials may read them.

Listing teams needs the read:org scope of a classic token (a fine-grained or App token: the
organisation's members permission). A classic token tells its scopes in the X-OAuth-Scopes header
of every answer (auth.Credential.scopes): one without read:org is not even asked, and one info
line says so; a credential that tells no scopes is asked, and a refusal (403/404) is that same
info line. Everything else goes on: teams are context for the metrics, never a reason to fail.

Read once per run (the first chunk), with ETags: a team list or member list of one page that has
not changed is a free 304 and lands nothing. A list of more pages is read whole every run (the
first page's ETag does not cover the others). The ETags live in the source's state under
"teams", landed with the rows they describe; a load set aside by the merge drops them
(destinations/handoff.py), so the lists are read again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterator

import dlt
import pyarrow as pa

from sources.github.auth import ORG_SCOPES
from sources.github.client import GitHubClient
from sources.github.errors import AuthenticationError, NotFoundError
from sources.github.schema import TEAM_MEMBERS, TEAMS, MalformedItem, team_member_row, team_row, to_table

logger = logging.getLogger(__name__)

PER_PAGE = 100
NO_READ_ORG = ("%s: teams are not landed: %s; metrics by team need read:org (a classic token) or the "
               "organisation's members permission (a fine-grained or App token)")


def lacks_read_org(client: GitHubClient) -> bool:
    """Some credential told scopes without read:org: GitHub would refuse it the teams."""
    return any(c.scopes is not None and not c.scopes & ORG_SCOPES for c in client.auth.credentials())


def _list(client: GitHubClient, path: str, etag: str | None) -> tuple[list[dict], str | None, bool]:
    """(items, the ETag to keep, not modified): the ETag only of a list of one page."""
    items: list[dict] = []
    pages = 0
    first_etag = None
    for page in client.iter_pages(path, {"per_page": PER_PAGE}, etag):
        if page.not_modified:
            return [], etag, True
        pages += 1
        first_etag = first_etag or page.etag
        items.extend(page.items)
    return items, first_etag if pages == 1 else None, False


def fetch_teams(client: GitHubClient, org: str, state: dict[str, Any], full_refresh: bool = False
                ) -> Iterator[pa.Table]:
    """The `teams` and `team_members` tables of what changed since the ETags in `state`."""
    if lacks_read_org(client):
        logger.info(NO_READ_ORG, org, "the token's scopes (X-OAuth-Scopes) have no read:org")
        return
    saved = state.setdefault("teams", {})
    etags: dict[str, str] = {} if full_refresh else dict(saved.get("etags", {}))
    now = datetime.now(timezone.utc)
    try:
        listed, list_etag, unchanged = _list(client, f"/orgs/{org}/teams", etags.get("list"))
    except (AuthenticationError, NotFoundError) as exc:
        logger.info(NO_READ_ORG, org, f"GitHub refused the list ({exc.status})")
        return
    rows: list[dict[str, Any]] = []
    if unchanged:
        known = saved.get("teams", [])
    else:
        for team in listed:
            try:
                rows.append(team_row(org, team, now))
            except MalformedItem as exc:
                logger.warning("%s: a team set aside: %s", org, exc)
        known = [{"id": r["id"], "slug": r["slug"]} for r in rows]
    members: list[dict[str, Any]] = []
    new_etags = {"list": list_etag} if list_etag else {}
    for team in known:
        key = str(team["id"])
        try:
            items, etag, same = _list(client, f"/orgs/{org}/teams/{team['slug']}/members", etags.get(key))
        except NotFoundError:  # deleted since it was listed: the next list leaves it out
            continue
        if etag:
            new_etags[key] = etag
        if same:
            continue
        for member in items:
            try:
                members.append(team_member_row(org, team, member, now))
            except MalformedItem as exc:
                logger.warning("%s: a member of team %s set aside: %s", org, team["slug"], exc)
    if rows:
        yield dlt.mark.with_table_name(to_table(TEAMS, rows), TEAMS.name)
    if members:
        yield dlt.mark.with_table_name(to_table(TEAM_MEMBERS, members), TEAM_MEMBERS.name)
    saved["etags"] = new_etags
    saved["teams"] = known
    logger.info("%s: %d teams%s, %d member rows landed", org, len(known), " (unchanged)" if unchanged else "",
                len(members))
