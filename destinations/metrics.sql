-- The metric views, in Snowflake's dialect; DuckDB receives them through sqlglot (sql.to_dialect).
-- Loaded by destinations/sql.py (metric_views): {schema} is replaced by the quoted schema name (on
-- Snowflake with its database: a reader's session must not complete the name with its own), lines
-- starting with "--" are dropped, and each statement ends with ";" at the end of a line.
-- The definitions are written out in README.md ("Metrics"); keep the two in step.
--
-- Rules used throughout:
-- * A bot is a user whose type is 'Bot' or whose login ends in '[bot]'. Pull requests opened by a
--   bot, reviews by a bot and review requests for a bot are left out.
-- * Nothing here depends on session parameters: weeks start on Monday through DAYOFWEEKISO (which
--   WEEK_START does not change), dates and week boundaries are taken in UTC (CONVERT_TIMEZONE('UTC',
--   ...)), durations are DATEDIFF in seconds between instants.
-- * Columns are listed, never SELECT *: a Snowflake view over SELECT * breaks when the merge adds a
--   column to its table.
-- * COPY GRANTS: a replaced view keeps the privileges granted on it (SELECT for a report's role),
--   sqlglot leaves it out for DuckDB, which has no grants.


-- The numbers 0 .. 9999, the number table of the views below: the weeks of a history (192 years) and
-- the days of a duration's working time (27 years).
CREATE OR REPLACE VIEW {schema}.numbers COPY GRANTS AS
WITH digits AS (
    SELECT d FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS t (d)
)

SELECT ones.d + 10 * tens.d + 100 * hundreds.d + 1000 * thousands.d AS n
FROM digits AS ones
CROSS JOIN digits AS tens
CROSS JOIN digits AS hundreds
CROSS JOIN digits AS thousands;


-- The reviews that count, one row per review: submitted (PENDING reviews have no submitted_at), by a
-- person who is not a bot and not the pull request's author (same user id; the login when an id is
-- missing; a deleted account (no id, no login) counts as someone else).
CREATE OR REPLACE VIEW {schema}.counted_reviews COPY GRANTS AS
SELECT
    r.org,
    r.repo,
    r.pull_request_id,
    r.pull_request_number,
    r.id AS review_id,
    r.author_login AS reviewer_login,
    r.state,
    r.submitted_at,
    r.body,
    r.inline_comments
FROM {schema}.pull_request_reviews AS r
JOIN {schema}.pull_requests AS p ON p.id = r.pull_request_id
WHERE r.submitted_at IS NOT NULL
  AND r.state IN ('COMMENTED', 'APPROVED', 'CHANGES_REQUESTED', 'DISMISSED')
  AND NOT COALESCE(r.author_type = 'Bot' OR r.author_login LIKE '%[bot]', FALSE)
  AND NOT COALESCE(r.author_id = p.author_id, r.author_login = p.author_login, FALSE);


-- One row per pull request not opened by a bot.
CREATE OR REPLACE VIEW {schema}.pull_request_metrics COPY GRANTS AS
WITH prs AS (
    SELECT
        org, repo, id, number, title, html_url, author_login, author_id, state, is_draft, is_merged,
        created_at, merged_at, closed_at
    FROM {schema}.pull_requests
    WHERE NOT COALESCE(author_type = 'Bot' OR author_login LIKE '%[bot]', FALSE)
),

events AS (
    SELECT pull_request_id, id, timeline_position, event, created_at, requested_reviewer_login,
           requested_reviewer_type, actor_login, actor_id, actor_type
    FROM {schema}.pull_request_events
),

event_facts AS (
    SELECT
        p.id AS pull_request_id,
        MIN(CASE WHEN e.event = 'ready_for_review' THEN e.created_at END) AS first_ready_for_review_at,
        SUM(CASE WHEN e.event = 'reopened' THEN 1 ELSE 0 END) AS times_reopened
    FROM prs AS p
    LEFT JOIN events AS e ON e.pull_request_id = p.id
    GROUP BY p.id
),

-- The first draft change in timeline order (two in one second are told apart by their position,
-- rows landed before timeline_position existed by their REST id).
first_draft_change AS (
    SELECT pull_request_id, event
    FROM events
    WHERE event IN ('convert_to_draft', 'ready_for_review')
    QUALIFY ROW_NUMBER() OVER (PARTITION BY pull_request_id ORDER BY created_at, timeline_position NULLS LAST, id) = 1
),

-- The first draft change tells how the pull request was opened: a ready_for_review first means it
-- was opened as a draft; without any draft change, its current is_draft does.
readiness AS (
    SELECT
        p.id AS pull_request_id,
        CASE
            WHEN d.event IS NOT NULL THEN d.event = 'ready_for_review'
            ELSE COALESCE(p.is_draft, FALSE)
        END AS opened_as_draft,
        f.first_ready_for_review_at,
        f.times_reopened
    FROM prs AS p
    JOIN event_facts AS f ON f.pull_request_id = p.id
    LEFT JOIN first_draft_change AS d ON d.pull_request_id = p.id
),

ready AS (
    SELECT
        pull_request_id,
        opened_as_draft,
        times_reopened,
        -- Opened as a draft: ready at its first ready_for_review (NULL while never ready).
        CASE WHEN opened_as_draft THEN first_ready_for_review_at ELSE p.created_at END AS ready_at
    FROM readiness
    JOIN prs AS p ON p.id = readiness.pull_request_id
),

-- Every change of draft state: convert_to_draft starts a draft span, ready_for_review ends it; a
-- pull request opened as a draft starts one at created_at. Changes in the same second keep timeline
-- order (rows landed before timeline_position existed have none: their REST id orders them).
draft_changes AS (
    SELECT r.pull_request_id, p.created_at AS changed_at, -1 AS position, 0 AS event_id, TRUE AS to_draft
    FROM ready AS r
    JOIN prs AS p ON p.id = r.pull_request_id
    WHERE r.opened_as_draft
    UNION ALL
    SELECT pull_request_id, created_at, timeline_position, id, event = 'convert_to_draft'
    FROM events
    WHERE event IN ('convert_to_draft', 'ready_for_review')
),

draft_spans AS (
    SELECT
        pull_request_id,
        to_draft,
        changed_at AS started_at,
        LEAD(changed_at) OVER (PARTITION BY pull_request_id ORDER BY changed_at, position NULLS LAST, event_id) AS ended_at
    FROM draft_changes
),

-- A span still open ends when the pull request was closed, or now while it is open. In UTC wall
-- time: CURRENT_TIMESTAMP() is in the reader's session time zone.
drafts AS (
    SELECT
        s.pull_request_id,
        SUM(DATEDIFF(
            'second',
            CONVERT_TIMEZONE('UTC', s.started_at)::TIMESTAMP_NTZ,
            COALESCE(
                CONVERT_TIMEZONE('UTC', COALESCE(s.ended_at, p.closed_at))::TIMESTAMP_NTZ,
                CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ
            )
        )) AS draft_seconds
    FROM draft_spans AS s
    JOIN prs AS p ON p.id = s.pull_request_id
    WHERE s.to_draft
    GROUP BY s.pull_request_id
),

requests AS (
    SELECT pull_request_id, MIN(created_at) AS first_review_requested_at
    FROM events
    WHERE event = 'review_requested'
      AND NOT COALESCE(requested_reviewer_type = 'Bot' OR requested_reviewer_login LIKE '%[bot]', FALSE)
    GROUP BY pull_request_id
),

review_facts AS (
    SELECT
        r.pull_request_id,
        COUNT(c.review_id) AS reviews,
        COUNT(DISTINCT c.reviewer_login) AS distinct_reviewers,
        SUM(CASE WHEN c.state = 'CHANGES_REQUESTED' THEN 1 ELSE 0 END) AS changes_requested_rounds,
        MAX(CASE WHEN c.state = 'APPROVED' AND c.submitted_at <= p.merged_at THEN 1 ELSE 0 END) = 1 AS approved_before_merge,
        MIN(CASE WHEN c.submitted_at >= r.ready_at THEN c.submitted_at END) AS first_review_at,
        MIN(CASE WHEN c.submitted_at >= r.ready_at AND c.state = 'APPROVED' THEN c.submitted_at END) AS first_approval_at,
        MIN(CASE WHEN c.submitted_at >= q.first_review_requested_at THEN c.submitted_at END) AS first_review_after_request_at,
        -- Review depth, NULL while a counted review's inline comments are not counted (landed before
        -- they were): the inline comments of the counted reviews; the reviews that say something (a
        -- body or an inline comment); the approvals that say nothing.
        CASE WHEN COUNT(c.review_id) = COUNT(c.inline_comments) THEN COALESCE(SUM(c.inline_comments), 0) END AS review_comments,
        CASE WHEN COUNT(c.review_id) = COUNT(c.inline_comments)
            THEN SUM(CASE WHEN c.inline_comments > 0 OR TRIM(COALESCE(c.body, '')) <> '' THEN 1 ELSE 0 END)
        END AS reviews_with_comments,
        CASE WHEN COUNT(c.review_id) = COUNT(c.inline_comments)
            THEN SUM(CASE WHEN c.state = 'APPROVED' AND c.inline_comments = 0 AND TRIM(COALESCE(c.body, '')) = '' THEN 1 ELSE 0 END)
        END AS bare_approvals
    FROM ready AS r
    JOIN prs AS p ON p.id = r.pull_request_id
    LEFT JOIN {schema}.counted_reviews AS c ON c.pull_request_id = r.pull_request_id
    LEFT JOIN requests AS q ON q.pull_request_id = r.pull_request_id
    GROUP BY r.pull_request_id
),

-- The pull request's commits as it holds them now: a commit's created_at is its author date, which a
-- rebase keeps. No commit rows: not known (landed before commits were), never zero.
commit_facts AS (
    SELECT pull_request_id, MIN(created_at) AS first_commit_at, COUNT(*) AS commits
    FROM events
    WHERE event = 'committed'
    GROUP BY pull_request_id
),

-- Conversation comments by someone other than the author, not a bot (the same rules as reviews).
counted_comments AS (
    SELECT e.pull_request_id, e.created_at
    FROM events AS e
    JOIN prs AS p ON p.id = e.pull_request_id
    WHERE e.event = 'commented'
      AND NOT COALESCE(e.actor_type = 'Bot' OR e.actor_login LIKE '%[bot]', FALSE)
      AND NOT COALESCE(e.actor_id = p.author_id, e.actor_login = p.author_login, FALSE)
),

-- The first response once ready: a counted review (an inline review comment comes in one) or a
-- counted conversation comment.
responses AS (
    SELECT r.pull_request_id, MIN(x.responded_at) AS first_response_at
    FROM ready AS r
    JOIN (
        SELECT pull_request_id, submitted_at AS responded_at FROM {schema}.counted_reviews
        UNION ALL
        SELECT pull_request_id, created_at FROM counted_comments
    ) AS x ON x.pull_request_id = r.pull_request_id AND x.responded_at >= r.ready_at
    GROUP BY r.pull_request_id
),

files AS (
    SELECT
        pull_request_id,
        SUM(COALESCE(additions, 0)) AS additions,
        SUM(COALESCE(deletions, 0)) AS deletions,
        COUNT(*) AS changed_files,
        MAX(CASE WHEN file_list_truncated THEN 1 ELSE 0 END) = 1 AS truncated
    FROM {schema}.pull_request_files
    GROUP BY pull_request_id
),

-- A file list fetched empty is known to be empty; one never fetched is unknown.
files_fetched AS (
    SELECT DISTINCT pull_request_id
    FROM {schema}.pull_request_child_fetches
    WHERE kind = 'files'
),

sizes AS (
    SELECT
        p.id AS pull_request_id,
        COALESCE(f.additions, 0) AS additions,
        COALESCE(f.deletions, 0) AS deletions,
        COALESCE(f.changed_files, 0) AS changed_files,
        COALESCE(f.truncated, FALSE) AS size_is_lower_bound
    FROM prs AS p
    LEFT JOIN files AS f ON f.pull_request_id = p.id
    LEFT JOIN files_fetched AS ff ON ff.pull_request_id = p.id
    WHERE f.pull_request_id IS NOT NULL OR ff.pull_request_id IS NOT NULL
),

metrics AS (
    SELECT
        p.org,
        p.repo,
        p.id,
        p.number,
        p.title,
        p.html_url,
        p.author_login,
        p.state,
        p.is_draft,
        p.is_merged,
        p.created_at,
        r.ready_at,
        q.first_review_requested_at,
        v.first_review_at,
        v.first_approval_at,
        p.merged_at,
        p.closed_at,
        COALESCE(d.draft_seconds, 0) AS draft_seconds,
        DATEDIFF('second', r.ready_at, v.first_review_at) AS time_to_first_review_seconds,
        DATEDIFF('second', q.first_review_requested_at, v.first_review_after_request_at) AS time_from_request_to_first_review_seconds,
        DATEDIFF('second', r.ready_at, v.first_approval_at) AS time_to_first_approval_seconds,
        -- The phases (README "Metrics"): coding from the first commit to ready (0 when every commit
        -- is dated after it), pickup from ready to the first response, review from it to the merge; a
        -- response after the merge is none. Cycle time runs from the earlier of the first commit and
        -- ready to the merge: coding + pickup + review when all three are known.
        CASE WHEN rf.first_response_at <= p.merged_at
            THEN DATEDIFF('second', rf.first_response_at, p.merged_at)
        END AS review_time_seconds,
        DATEDIFF('second', r.ready_at, p.merged_at) AS time_to_merge_seconds,
        CASE WHEN p.is_merged THEN NOT v.approved_before_merge END AS merged_without_approval,
        CASE WHEN p.is_merged THEN v.first_review_at IS NULL OR v.first_review_at > p.merged_at END AS merged_without_review,
        v.reviews,
        v.distinct_reviewers,
        v.changes_requested_rounds,
        v.review_comments,
        v.reviews_with_comments,
        v.bare_approvals,
        r.times_reopened,
        s.additions,
        s.deletions,
        s.changed_files,
        CASE
            WHEN s.additions + s.deletions < 10 THEN 'XS'
            WHEN s.additions + s.deletions < 100 THEN 'S'
            WHEN s.additions + s.deletions < 500 THEN 'M'
            WHEN s.additions + s.deletions < 1000 THEN 'L'
            WHEN s.additions + s.deletions >= 1000 THEN 'XL'
        END AS size_bucket,
        s.size_is_lower_bound,
        cf.first_commit_at,
        rf.first_response_at,
        cf.commits,
        CASE
            WHEN cf.first_commit_at < r.ready_at THEN DATEDIFF('second', cf.first_commit_at, r.ready_at)
            WHEN cf.first_commit_at IS NOT NULL AND r.ready_at IS NOT NULL THEN 0
        END AS coding_time_seconds,
        CASE WHEN p.merged_at IS NULL OR rf.first_response_at <= p.merged_at
            THEN DATEDIFF('second', r.ready_at, rf.first_response_at)
        END AS pickup_time_seconds,
        CASE
            WHEN cf.first_commit_at < r.ready_at THEN DATEDIFF('second', cf.first_commit_at, p.merged_at)
            WHEN cf.first_commit_at IS NOT NULL THEN DATEDIFF('second', r.ready_at, p.merged_at)
        END AS cycle_time_seconds
    FROM prs AS p
    JOIN ready AS r ON r.pull_request_id = p.id
    JOIN review_facts AS v ON v.pull_request_id = p.id
    LEFT JOIN commit_facts AS cf ON cf.pull_request_id = p.id
    LEFT JOIN responses AS rf ON rf.pull_request_id = p.id
    LEFT JOIN requests AS q ON q.pull_request_id = p.id
    LEFT JOIN drafts AS d ON d.pull_request_id = p.id
    LEFT JOIN sizes AS s ON s.pull_request_id = p.id
),

-- Working time (docs/metrics.md, "Working time"): each duration also counted inside the working
-- calendar of the pull request's organisation ("*" for one without its own). A duration is cut into
-- the local days it touches (a number table); each working day that is no holiday adds its overlap
-- with the duration. The day's hours become instants by CONVERT_TIMEZONE in the calendar's own time
-- zone: DST comes from the warehouse's zone database, never from a session setting.
-- One calendar per organisation even if two bootstraps raced to write one (Snowflake has no lock
-- around them), and each holiday once.
working_calendars AS (
    SELECT org, time_zone, work_days, start_second, end_second
    FROM {schema}.working_calendars
    QUALIFY ROW_NUMBER() OVER (PARTITION BY org ORDER BY time_zone, work_days, start_second, end_second) = 1
),

working_holidays AS (
    SELECT DISTINCT org, holiday
    FROM {schema}.working_holidays
),

calendars AS (
    SELECT
        m.id,
        COALESCE(c.org, d.org) AS calendar_org,
        COALESCE(c.time_zone, d.time_zone) AS time_zone,
        COALESCE(c.work_days, d.work_days) AS work_days,
        COALESCE(c.start_second, d.start_second) AS start_second,
        COALESCE(c.end_second, d.end_second) AS end_second
    FROM metrics AS m
    LEFT JOIN working_calendars AS c ON c.org = m.org
    JOIN working_calendars AS d ON d.org = '*'
),

spans AS (
    SELECT id, 'coding' AS phase, first_commit_at AS started_at, ready_at AS ended_at
    FROM metrics WHERE coding_time_seconds > 0
    UNION ALL
    SELECT id, 'pickup', ready_at, first_response_at FROM metrics WHERE pickup_time_seconds >= 0
    UNION ALL
    SELECT id, 'review', first_response_at, merged_at FROM metrics WHERE review_time_seconds >= 0
    UNION ALL
    SELECT id, 'cycle', CASE WHEN first_commit_at < ready_at THEN first_commit_at ELSE ready_at END, merged_at
    FROM metrics WHERE cycle_time_seconds >= 0
    UNION ALL
    SELECT id, 'first_review', ready_at, first_review_at FROM metrics WHERE time_to_first_review_seconds >= 0
    UNION ALL
    SELECT id, 'merge', ready_at, merged_at FROM metrics WHERE time_to_merge_seconds >= 0
),

-- At most the last 9,999 days of a duration count (destinations/working_calendar.py, MAX_DAYS): the
-- day numbers below reach 9,999.
capped_spans AS (
    SELECT id, phase, GREATEST(started_at, DATEADD('day', -9999, ended_at)) AS started_at, ended_at
    FROM spans
),

local_spans AS (
    SELECT
        s.id,
        s.phase,
        c.calendar_org,
        c.time_zone,
        c.work_days,
        c.start_second,
        c.end_second,
        CONVERT_TIMEZONE('UTC', s.started_at)::TIMESTAMP_NTZ AS started_utc,
        CONVERT_TIMEZONE('UTC', s.ended_at)::TIMESTAMP_NTZ AS ended_utc,
        CONVERT_TIMEZONE(c.time_zone, s.started_at)::DATE AS first_day,
        DATEDIFF('day', CONVERT_TIMEZONE(c.time_zone, s.started_at)::DATE,
                 CONVERT_TIMEZONE(c.time_zone, s.ended_at)::DATE) AS last_day_number
    FROM capped_spans AS s
    JOIN calendars AS c ON c.id = s.id
),

span_days AS (
    SELECT l.*, DATEADD('day', n.n, l.first_day)::DATE AS local_day
    FROM local_spans AS l
    JOIN {schema}.numbers AS n ON n.n <= l.last_day_number
),

-- Each working day's hours as UTC wall-clock times ("24:00" is the next midnight).
working_days AS (
    SELECT
        s.id,
        s.phase,
        s.started_utc,
        s.ended_utc,
        CONVERT_TIMEZONE(s.time_zone, 'UTC', DATEADD('second', s.start_second, s.local_day::TIMESTAMP_NTZ)) AS day_start_utc,
        CONVERT_TIMEZONE(s.time_zone, 'UTC', DATEADD('second', s.end_second, s.local_day::TIMESTAMP_NTZ)) AS day_end_utc
    FROM span_days AS s
    LEFT JOIN working_holidays AS h ON h.org = s.calendar_org AND h.holiday = s.local_day
    WHERE CONTAINS(s.work_days, CAST(DAYOFWEEKISO(s.local_day) AS VARCHAR))
      AND h.holiday IS NULL
),

day_overlaps AS (
    SELECT
        id,
        phase,
        SUM(GREATEST(0, DATEDIFF('second', GREATEST(started_utc, day_start_utc), LEAST(ended_utc, day_end_utc)))) AS seconds
    FROM working_days
    GROUP BY id, phase
),

-- A span without a working day in it is 0 working seconds.
working AS (
    SELECT
        s.id,
        MAX(CASE WHEN s.phase = 'coding' THEN COALESCE(o.seconds, 0) END) AS coding_seconds,
        MAX(CASE WHEN s.phase = 'pickup' THEN COALESCE(o.seconds, 0) END) AS pickup_seconds,
        MAX(CASE WHEN s.phase = 'review' THEN COALESCE(o.seconds, 0) END) AS review_seconds,
        MAX(CASE WHEN s.phase = 'cycle' THEN COALESCE(o.seconds, 0) END) AS cycle_seconds,
        MAX(CASE WHEN s.phase = 'first_review' THEN COALESCE(o.seconds, 0) END) AS first_review_seconds,
        MAX(CASE WHEN s.phase = 'merge' THEN COALESCE(o.seconds, 0) END) AS merge_seconds
    FROM spans AS s
    LEFT JOIN day_overlaps AS o ON o.id = s.id AND o.phase = s.phase
    GROUP BY s.id
)

SELECT
    m.*,
    CASE WHEN m.coding_time_seconds = 0 THEN 0 ELSE w.coding_seconds END AS coding_time_working_seconds,
    w.pickup_seconds AS pickup_time_working_seconds,
    w.review_seconds AS review_time_working_seconds,
    w.cycle_seconds AS cycle_time_working_seconds,
    w.first_review_seconds AS time_to_first_review_working_seconds,
    w.merge_seconds AS time_to_merge_working_seconds
FROM metrics AS m
LEFT JOIN working AS w ON w.id = m.id;


-- One row per Monday-starting UTC week x organisation x repository, and per week x organisation
-- with repo NULL (the whole organisation), from the week of the first pull request of that
-- repository (organisation) to the current week.
CREATE OR REPLACE VIEW {schema}.weekly_pull_request_metrics COPY GRANTS AS
WITH now_utc AS (
    SELECT CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ AS now_at
),

-- Instants as UTC wall-clock times, so that dates and week boundaries are UTC ones.
prs_utc AS (
    SELECT
        id,
        org,
        repo,
        is_merged,
        -- Opened as a draft: ready later than opened, or never (see ready_at).
        ready_at IS NULL OR ready_at > created_at AS opened_as_draft,
        merged_without_review,
        time_to_first_review_seconds,
        time_to_merge_seconds,
        coding_time_seconds,
        pickup_time_seconds,
        review_time_seconds,
        cycle_time_seconds,
        review_comments,
        reviews_with_comments,
        bare_approvals,
        CONVERT_TIMEZONE('UTC', created_at)::TIMESTAMP_NTZ AS created_utc,
        CONVERT_TIMEZONE('UTC', merged_at)::TIMESTAMP_NTZ AS merged_utc,
        CONVERT_TIMEZONE('UTC', closed_at)::TIMESTAMP_NTZ AS closed_utc,
        CONVERT_TIMEZONE('UTC', first_review_at)::TIMESTAMP_NTZ AS first_review_utc
    FROM {schema}.pull_request_metrics
),

-- The Monday on or before a date: DAYOFWEEKISO is 1 on Monday, whatever WEEK_START says.
prs AS (
    SELECT
        *,
        DATEADD('day', 1 - DAYOFWEEKISO(created_utc::DATE), created_utc::DATE)::DATE AS created_week,
        DATEADD('day', 1 - DAYOFWEEKISO(merged_utc::DATE), merged_utc::DATE)::DATE AS merged_week,
        DATEADD('day', 1 - DAYOFWEEKISO(closed_utc::DATE), closed_utc::DATE)::DATE AS closed_week,
        DATEADD('day', 1 - DAYOFWEEKISO(first_review_utc::DATE), first_review_utc::DATE)::DATE AS first_review_week
    FROM prs_utc
),

current_week AS (
    SELECT
        now_at,
        DATEADD('day', 1 - DAYOFWEEKISO(now_at::DATE), now_at::DATE)::DATE AS week_start
    FROM now_utc
),

-- Each pull request counts in two scopes: its repository, and its organisation (scope_repo NULL).
scoped_prs AS (
    SELECT *, repo AS scope_repo FROM prs
    UNION ALL
    SELECT *, CAST(NULL AS VARCHAR) AS scope_repo FROM prs
),

scopes AS (
    SELECT org, scope_repo AS repo, MIN(created_week) AS first_week
    FROM scoped_prs
    GROUP BY org, scope_repo
),

-- Each week ends at the next Monday 00:00 UTC; the current week ends now.
weeks AS (
    SELECT
        s.org,
        s.repo,
        DATEADD('day', 7 * w.n, s.first_week)::DATE AS week_start,
        LEAST(DATEADD('day', 7 * (w.n + 1), s.first_week)::TIMESTAMP_NTZ, c.now_at) AS week_end
    FROM scopes AS s
    CROSS JOIN {schema}.numbers AS w
    CROSS JOIN current_week AS c
    WHERE DATEADD('day', 7 * w.n, s.first_week)::DATE <= c.week_start
),

-- Each week with the pull requests of its scope that matter to it: opened before its end and not
-- closed before its start (or first reviewed in it or later).
week_prs AS (
    SELECT
        w.week_start,
        w.org,
        w.repo,
        CASE WHEN p.created_week = w.week_start THEN 1 ELSE 0 END AS opened,
        CASE WHEN p.merged_week = w.week_start THEN 1 ELSE 0 END AS merged,
        CASE WHEN p.closed_week = w.week_start AND NOT p.is_merged THEN 1 ELSE 0 END AS closed_without_merge,
        CASE WHEN p.first_review_week = w.week_start THEN p.time_to_first_review_seconds END AS first_review_seconds,
        CASE WHEN p.merged_week = w.week_start THEN p.time_to_merge_seconds END AS merge_seconds,
        CASE WHEN p.merged_week = w.week_start AND p.merged_without_review THEN 1 ELSE 0 END AS merged_without_review,
        -- The phases of the pull requests merged in the week, one cohort for all four.
        CASE WHEN p.merged_week = w.week_start THEN p.coding_time_seconds END AS coding_seconds,
        CASE WHEN p.merged_week = w.week_start THEN p.pickup_time_seconds END AS pickup_seconds,
        CASE WHEN p.merged_week = w.week_start THEN p.review_time_seconds END AS review_seconds,
        CASE WHEN p.merged_week = w.week_start THEN p.cycle_time_seconds END AS cycle_seconds,
        -- Review depth of the same cohort.
        CASE WHEN p.merged_week = w.week_start THEN p.review_comments END AS review_comments,
        CASE WHEN p.merged_week = w.week_start THEN p.reviews_with_comments END AS reviews_with_comments,
        CASE WHEN p.merged_week = w.week_start THEN p.bare_approvals END AS bare_approvals,
        CASE WHEN p.created_utc < w.week_end AND (p.closed_utc IS NULL OR p.closed_utc >= w.week_end)
            THEN DATEDIFF('second', p.created_utc, w.week_end)
        END AS open_age_seconds,
        p.id AS pull_request_id,
        p.opened_as_draft,
        w.week_end
    FROM weeks AS w
    LEFT JOIN scoped_prs AS p
        ON p.org = w.org
        AND p.scope_repo IS NOT DISTINCT FROM w.repo
        AND p.created_utc < w.week_end
        AND (p.closed_utc IS NULL OR p.closed_utc >= w.week_start OR p.first_review_utc >= w.week_start)
),

-- Work in progress: of the pull requests open at a week's end, those not in draft then. The last
-- draft change before the end decides (timeline order within a second); without one, how it was
-- opened.
draft_changes AS (
    SELECT
        pull_request_id,
        CONVERT_TIMEZONE('UTC', created_at)::TIMESTAMP_NTZ AS changed_utc,
        timeline_position,
        id AS event_id,
        event = 'convert_to_draft' AS to_draft
    FROM {schema}.pull_request_events
    WHERE event IN ('convert_to_draft', 'ready_for_review')
),

draft_at_week_end AS (
    SELECT
        o.week_start,
        o.org,
        o.repo,
        COALESCE(d.to_draft, o.opened_as_draft) AS in_draft
    FROM week_prs AS o
    LEFT JOIN draft_changes AS d ON d.pull_request_id = o.pull_request_id AND d.changed_utc < o.week_end
    WHERE o.open_age_seconds IS NOT NULL
    QUALIFY ROW_NUMBER() OVER (
        PARTITION BY o.week_start, o.org, o.repo, o.pull_request_id
        ORDER BY d.changed_utc DESC NULLS LAST, d.timeline_position DESC NULLS LAST, d.event_id DESC NULLS LAST
    ) = 1
),

ready_at_week_end AS (
    SELECT week_start, org, repo, SUM(CASE WHEN in_draft THEN 0 ELSE 1 END) AS open_ready_prs
    FROM draft_at_week_end
    GROUP BY week_start, org, repo
),

weekly AS (
    SELECT
        week_start,
        org,
        repo,
        SUM(opened) AS prs_opened,
        SUM(merged) AS prs_merged,
        SUM(closed_without_merge) AS prs_closed_without_merge,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY first_review_seconds))::BIGINT AS time_to_first_review_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY first_review_seconds))::BIGINT AS time_to_first_review_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY first_review_seconds))::BIGINT AS time_to_first_review_p90_seconds,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY merge_seconds))::BIGINT AS time_to_merge_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY merge_seconds))::BIGINT AS time_to_merge_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY merge_seconds))::BIGINT AS time_to_merge_p90_seconds,
        COUNT(open_age_seconds) AS open_prs_at_week_end,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY open_age_seconds))::BIGINT AS open_pr_median_age_seconds,
        COUNT(first_review_seconds) AS time_to_first_review_samples,
        COUNT(merge_seconds) AS time_to_merge_samples,
        SUM(merged_without_review) AS prs_merged_without_review,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY coding_seconds))::BIGINT AS coding_time_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY coding_seconds))::BIGINT AS coding_time_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY coding_seconds))::BIGINT AS coding_time_p90_seconds,
        COUNT(coding_seconds) AS coding_time_samples,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY pickup_seconds))::BIGINT AS pickup_time_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY pickup_seconds))::BIGINT AS pickup_time_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY pickup_seconds))::BIGINT AS pickup_time_p90_seconds,
        COUNT(pickup_seconds) AS pickup_time_samples,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY review_seconds))::BIGINT AS review_time_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY review_seconds))::BIGINT AS review_time_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY review_seconds))::BIGINT AS review_time_p90_seconds,
        COUNT(review_seconds) AS review_time_samples,
        ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY cycle_seconds))::BIGINT AS cycle_time_p50_seconds,
        ROUND(PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY cycle_seconds))::BIGINT AS cycle_time_p75_seconds,
        ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY cycle_seconds))::BIGINT AS cycle_time_p90_seconds,
        COUNT(cycle_seconds) AS cycle_time_samples,
        AVG(CAST(review_comments AS DOUBLE)) AS review_comments_per_merged_pr,
        COUNT(review_comments) AS review_comments_samples,
        SUM(reviews_with_comments) AS reviews_with_comments,
        SUM(bare_approvals) AS bare_approvals
    FROM week_prs
    GROUP BY week_start, org, repo
)

SELECT
    w.week_start,
    w.org,
    w.repo,
    w.prs_opened,
    w.prs_merged,
    w.prs_closed_without_merge,
    CAST(w.prs_merged AS DOUBLE) / NULLIF(w.prs_merged + w.prs_closed_without_merge, 0) AS merge_rate,
    w.time_to_first_review_p50_seconds,
    w.time_to_first_review_p75_seconds,
    w.time_to_first_review_p90_seconds,
    w.time_to_merge_p50_seconds,
    w.time_to_merge_p75_seconds,
    w.time_to_merge_p90_seconds,
    w.open_prs_at_week_end,
    w.open_pr_median_age_seconds,
    w.time_to_first_review_samples,
    w.time_to_merge_samples,
    w.prs_merged_without_review,
    w.coding_time_p50_seconds,
    w.coding_time_p75_seconds,
    w.coding_time_p90_seconds,
    w.coding_time_samples,
    w.pickup_time_p50_seconds,
    w.pickup_time_p75_seconds,
    w.pickup_time_p90_seconds,
    w.pickup_time_samples,
    w.review_time_p50_seconds,
    w.review_time_p75_seconds,
    w.review_time_p90_seconds,
    w.review_time_samples,
    w.cycle_time_p50_seconds,
    w.cycle_time_p75_seconds,
    w.cycle_time_p90_seconds,
    w.cycle_time_samples,
    COALESCE(r.open_ready_prs, 0) AS open_ready_prs_at_week_end,
    w.review_comments_per_merged_pr,
    w.review_comments_samples,
    w.reviews_with_comments,
    w.bare_approvals
FROM weekly AS w
LEFT JOIN ready_at_week_end AS r
    ON r.week_start = w.week_start AND r.org = w.org AND r.repo IS NOT DISTINCT FROM w.repo;


-- One row per Monday-starting UTC week (of submitted_at) x organisation x repository x reviewer:
-- the counted reviews on pull requests not opened by a bot.
CREATE OR REPLACE VIEW {schema}.reviewer_load COPY GRANTS AS
WITH reviews AS (
    SELECT
        c.org,
        c.repo,
        c.reviewer_login,
        c.pull_request_id,
        c.inline_comments,
        CONVERT_TIMEZONE('UTC', c.submitted_at)::DATE AS submitted_date
    FROM {schema}.counted_reviews AS c
    JOIN {schema}.pull_request_metrics AS m ON m.id = c.pull_request_id
    WHERE c.reviewer_login IS NOT NULL
)

SELECT
    DATEADD('day', 1 - DAYOFWEEKISO(submitted_date), submitted_date)::DATE AS week_start,
    org,
    repo,
    reviewer_login,
    COUNT(*) AS reviews,
    COUNT(DISTINCT pull_request_id) AS prs_reviewed,
    -- NULL while one of the reviews' inline comments is not counted.
    CASE WHEN COUNT(*) = COUNT(inline_comments) THEN SUM(inline_comments) END AS inline_comments
FROM reviews
GROUP BY 1, 2, 3, 4;


-- One row per Monday-starting UTC week x organisation x team with activity: the pull requests (not
-- opened by a bot) whose author is in the team as the team is now (GitHub keeps no history of
-- membership; someone in two teams counts in both). Opened by created_at, merged by merged_at, a
-- first review in the week it came, as in weekly_pull_request_metrics.
CREATE OR REPLACE VIEW {schema}.weekly_team_metrics COPY GRANTS AS
WITH members AS (
    SELECT DISTINCT t.org, t.slug AS team_slug, m.user_id
    FROM {schema}.team_members AS m
    JOIN {schema}.teams AS t ON t.org = m.org AND t.id = m.team_id
),

team_prs AS (
    SELECT
        m.org,
        mb.team_slug,
        m.time_to_first_review_seconds,
        m.time_to_merge_seconds,
        m.cycle_time_seconds,
        CONVERT_TIMEZONE('UTC', m.created_at)::DATE AS created_date,
        CONVERT_TIMEZONE('UTC', m.merged_at)::DATE AS merged_date,
        CONVERT_TIMEZONE('UTC', m.first_review_at)::DATE AS first_review_date
    FROM {schema}.pull_request_metrics AS m
    JOIN {schema}.pull_requests AS p ON p.id = m.id
    JOIN members AS mb ON mb.org = m.org AND mb.user_id = p.author_id
),

team_events AS (
    SELECT org, team_slug, created_date AS day, 1 AS opened, 0 AS merged,
           CAST(NULL AS BIGINT) AS first_review_seconds, CAST(NULL AS BIGINT) AS merge_seconds,
           CAST(NULL AS BIGINT) AS cycle_seconds
    FROM team_prs
    UNION ALL
    SELECT org, team_slug, merged_date, 0, 1, NULL, time_to_merge_seconds, cycle_time_seconds
    FROM team_prs
    WHERE merged_date IS NOT NULL
    UNION ALL
    SELECT org, team_slug, first_review_date, 0, 0, time_to_first_review_seconds, NULL, NULL
    FROM team_prs
    WHERE first_review_date IS NOT NULL AND time_to_first_review_seconds IS NOT NULL
)

SELECT
    DATEADD('day', 1 - DAYOFWEEKISO(day), day)::DATE AS week_start,
    org,
    team_slug,
    SUM(opened) AS prs_opened,
    SUM(merged) AS prs_merged,
    ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY first_review_seconds))::BIGINT AS time_to_first_review_p50_seconds,
    ROUND(PERCENTILE_CONT(0.90) WITHIN GROUP (ORDER BY first_review_seconds))::BIGINT AS time_to_first_review_p90_seconds,
    COUNT(first_review_seconds) AS time_to_first_review_samples,
    ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY merge_seconds))::BIGINT AS time_to_merge_p50_seconds,
    COUNT(merge_seconds) AS time_to_merge_samples,
    ROUND(PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY cycle_seconds))::BIGINT AS cycle_time_p50_seconds,
    COUNT(cycle_seconds) AS cycle_time_samples
FROM team_events
GROUP BY 1, 2, 3;
