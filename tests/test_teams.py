"""The organisation's teams and members: landed where the token reads them, revalidated with
ETags, a team change replacing the team's set; no request at all with a token whose scopes lack
read:org."""

from __future__ import annotations

import logging

import duckdb

from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    ORG,
    TOKEN,
    dataset,
    emu,
    fake,
    merge_only,
    run,
    settings,
)


def warehouse_members(settings) -> set[tuple[str, str]]:
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        rows = con.sql("SELECT t.slug, m.login FROM github.team_members AS m "
                       "JOIN github.teams AS t ON t.id = m.team_id").fetchall()
    finally:
        con.close()
    return set(rows)


def served_members(dataset) -> set[tuple[str, str]]:
    return {(team["slug"], member["login"]) for team in dataset.teams(ORG)
            for member in dataset.team_members(ORG, team["slug"])}


def test_teams_land_revalidate_for_free_and_a_team_change_replaces_the_set(settings, dataset, emu, fake):
    emu.graphql.org_readers = {TOKEN}  # a token with read:org
    run(settings, emu, fake)
    merge_only(settings)
    assert warehouse_members(settings) == served_members(dataset)
    teams = dataset.teams(ORG)

    emu.reset_stats()
    run(settings, emu, fake)
    stats = emu.stats
    # The team list and each team's members: one conditional request each, all 304, free.
    assert stats["by_endpoint"]["teams"] == 1 and stats["by_endpoint"]["team_members"] == len(teams)
    assert stats["cost"] == 0

    # dev-ada leaves her team(s) for security: the lists that changed are landed whole and
    # replace their sets; the others answer 304.
    before = {slug for slug, login in served_members(dataset) if login == "dev-ada"}
    dataset.move_team_member(ORG, "dev-ada", "security")
    emu.reset_stats()
    run(settings, emu, fake)
    merge_only(settings)
    assert emu.stats["cost"] == len(before | {"security"})
    assert warehouse_members(settings) == served_members(dataset)
    assert {slug for slug, login in warehouse_members(settings) if login == "dev-ada"} == {"security"}


def test_a_token_without_read_org_is_not_asked_and_one_line_says_so(settings, dataset, emu, fake, caplog):
    caplog.set_level(logging.INFO, logger="sources.github.teams")
    report = run(settings, emu, fake)  # the emulator tells this token's scopes: "repo"
    assert "teams" not in emu.stats["by_endpoint"] and "team_members" not in emu.stats["by_endpoint"]
    assert not report.progress.partial and report.rows["pull_requests"] > 0
    said = [r.getMessage() for r in caplog.records if "teams are not landed" in r.getMessage()]
    assert said == [f"{ORG}: teams are not landed: the token's scopes (X-OAuth-Scopes) have no read:org; metrics "
                    "by team need read:org (a classic token) or the organisation's members permission (a "
                    "fine-grained or App token)"]
    merge_only(settings)
    assert warehouse_members(settings) == set()


def test_a_credential_without_scopes_that_is_refused_the_teams_goes_on(settings, dataset, emu, fake, caplog):
    """No X-OAuth-Scopes (a fine-grained or App token, here anonymous access): the list is
    asked once; GitHub's refusal is the same info line, and the rest of the run is whole."""
    caplog.set_level(logging.INFO, logger="sources.github.teams")
    report = run(settings, emu, fake, tokens=())
    assert emu.stats["by_endpoint"]["teams"] == 1 and "team_members" not in emu.stats["by_endpoint"]
    assert not report.progress.partial and report.rows["pull_requests"] > 0
    assert any("GitHub refused the list (403)" in r.getMessage() for r in caplog.records)
