"""What the destinations must never receive, checked at the destinations (loopback servers speaking the wire formats):
suppressed people on a first run and between daily runs, ad sends without established suppression, and the state
checks verifying what was acknowledged rather than the routing view."""

import dagster as dg
import duckdb

from retention_pipeline.cli import main
from retention_pipeline.definitions import defs
from retention_pipeline.destinations import registry
from retention_pipeline.destinations.identity import (
    email_sha256,
    google_email_sha256,
    google_phone_sha256,
    meta_phone_sha256,
)
from retention_pipeline.warehouse import resolve_duckdb_path
from retention_pipeline_tests.destinations.conftest import pinterest_lists

DAY = "2026-11-19"
SYNC_DAILY = dg.AssetKey(["sync", "activation_daily"])
DAILY_AD_SEGMENTS = ("usage_drop_wow", "renewal_7d_low_activity", "winback_lapsed_45_120")
AD_DESTINATIONS = registry.ad_names()  # meta, google, tiktok, pinterest


def db(sql, params=None):
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        return con.execute(sql, params or []).fetchall()


def run(job: str, partition: str, selection=None, run_config=None):
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=partition, asset_selection=selection, run_config=run_config, raise_on_error=False
    )


def suppressed_people(cadence: str) -> list[tuple[str, str | None, str | None]]:
    """(person, email, phone) at accounts the do_not_retarget rule suppresses in the newest features of `cadence`,
    computed from the features themselves (not from the segments engine under test)."""
    return db(
        """SELECT person_id, email_normalized, phone_e164 FROM raw.contacts WHERE customer_id IN (
            SELECT customer_id FROM analytics.customer_features
            WHERE cadence = ? AND as_of = (SELECT max(as_of) FROM analytics.customer_features WHERE cadence = ?)
              AND (is_archived OR renewed_14d OR do_not_retarget))""",
        [cadence, cadence],
    )


def ad_members(destinations) -> set[str]:
    """Every hash the Meta and TikTok audiences, Google user lists and Pinterest customer lists hold right now."""
    _, meta, google, tiktok, pinterest, routing = destinations
    found = set()
    for audience in routing["meta"]["audiences"].values():
        found |= meta.members(audience, "EMAIL") | meta.members(audience, "PHONE")
    for user_list in routing["google"]["user_lists"].values():
        found |= google.members(user_list, "emailAddress")
    for audience in routing["tiktok"]["audiences"].values():
        found |= tiktok.members(audience, "EMAIL_SHA256") | tiktok.members(audience, "PHONE_SHA256")
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        for customer_list in pinterest_lists(con).values():
            found |= pinterest.members(customer_list)
    return found


def hashes(people) -> set[str]:
    out = set()
    for _, email, phone in people:
        out |= {
            email_sha256(email),
            google_email_sha256(email),
            meta_phone_sha256(phone),
            google_phone_sha256(phone),
        }
    return out - {None}


def in_ad_destinations(sql: str) -> str:
    """`sql` with {ads} replaced by the registry's ad destinations as a SQL list."""
    return sql.replace("{ads}", ", ".join(f"'{d}'" for d in AD_DESTINATIONS))


def destination_requests(*sandboxes) -> int:
    """Requests that could change a destination (the resources' credential probes are GETs)."""
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


def test_a_fresh_make_run_sends_no_suppressed_person_and_a_second_sends_nothing(
    destinations, monkeypatch, tmp_path
):
    cio, meta, google, tiktok, pinterest, routing = destinations
    everywhere = (cio, meta, google, tiktok, pinterest)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()

    assert main(["run"]) == 0  # the daily job first (no hourly partition exists yet), then the hourly one

    # What the daily sync sent (its acknowledged adds) holds no one suppressed as of the daily features.
    suppressed = suppressed_people("daily")
    sent_by_daily = {r[0] for r in db(in_ad_destinations(
        """SELECT i.member_key FROM sync.ledger_items AS i JOIN sync.runs AS r USING (sync_id)
        WHERE r.cadence = 'daily' AND i.destination IN ({ads}) AND i.operation = 'add'"""
    ))}  # fmt: skip
    assert sent_by_daily and not sent_by_daily & {p for p, _, _ in suppressed}
    # The check means something: suppressed people are members of daily ad segments (with consent, not held out).
    exposed = db(
        """SELECT count(*) FROM segments.members AS m JOIN raw.contacts AS c USING (customer_id, person_id)
        WHERE m.segment IN (SELECT unnest(?::VARCHAR[])) AND NOT m.is_holdout AND c.marketing_consent
          AND m.person_id IN (SELECT unnest(?::VARCHAR[]))""",
        [list(DAILY_AD_SEGMENTS), [p for p, _, _ in suppressed]],
    )[0][0]
    assert exposed > 0
    # What the audiences hold after both jobs: no one suppressed as of the newest (hourly) features.
    assert ad_members(destinations)
    assert not ad_members(destinations) & hashes(suppressed_people("hourly"))

    before = destination_requests(*everywhere)
    assert main(["run"]) == 0
    assert destination_requests(*everywhere) == before


def test_an_account_suppressed_between_daily_runs_leaves_daily_audiences_at_the_next_hourly_run(
    destinations, sandbox, monkeypatch, tmp_path
):
    cio, meta, google, tiktok, pinterest, routing = destinations
    metronome = sandbox.serve()  # the tenant on loopback, so it can change between runs
    sandbox.tenant.contacts_frame().to_csv(tmp_path / "contacts.csv", index=False)
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "test-token")
    monkeypatch.setenv("METRONOME_API_URL", metronome.url)
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(tmp_path / "contacts.csv"))
    for job, partition in (("daily_retention", DAY), ("hourly_retention", "2026-11-20-08:00")):
        assert run(job, partition).success
    segment, person, customer = db(
        """SELECT s.segment, s.member_key, min(c.customer_id) FROM sync.destination_state AS s
        JOIN raw.contacts AS c ON c.person_id = s.member_key
        WHERE s.destination = 'meta' AND s.segment IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL ORDER BY ALL
        LIMIT 1""",
        [list(DAILY_AD_SEGMENTS)],
    )[0]
    email, phone = db("SELECT email_normalized, phone_e164 FROM raw.contacts WHERE person_id = ?", [person])[
        0
    ]
    assert hashes([(person, email, phone)]) & ad_members(destinations)

    sandbox.set_custom_fields(customer, do_not_retarget="true")  # flagged in Metronome at 09:00
    assert run("hourly_retention", "2026-11-20-09:00").success  # only the hourly job runs before tomorrow

    assert not hashes([(person, email, phone)]) & ad_members(destinations)
    assert not db(
        in_ad_destinations(
            "SELECT 1 FROM sync.destination_state WHERE member_key = ? AND destination IN ({ads})"
        ),
        [person],
    )
    if (
        segment in routing["customerio"]["manual_segments"]
    ):  # Customer.io is not an ad platform: still a member
        assert cio.person(id=person)["attributes"][f"rp_{segment}_tier"] is not None
    metronome.close()


def test_without_established_suppression_ad_syncs_send_nothing_and_the_check_reads_acknowledged_state(
    destinations,
):
    cio, meta, google, tiktok, pinterest, routing = destinations
    assert run("daily_retention", DAY).success
    person, customer, as_of = db(
        """SELECT s.member_key, min(c.customer_id), max(p.as_of) FROM sync.destination_state AS s
        JOIN raw.contacts AS c ON c.person_id = s.member_key
        JOIN segments.partitions AS p ON p.segment = 'usage_drop_wow'
        WHERE s.destination = 'meta' GROUP BY ALL ORDER BY ALL LIMIT 1"""
    )[0]
    # The account becomes suppressed; a dry run plans but sends nothing, so the person is still in the acknowledged
    # Meta state although the routing view already excludes them: the check must see it.
    # (An extra suppression partition at the newest instant, as another cadence's run would write it.)
    db("INSERT INTO segments.partitions VALUES ('do_not_retarget', 'hourly', 'test', ?, 1, 1, 0, 1, 0, NULL, NULL, "
       "NULL, 'ok', NULL, now())", [as_of])  # fmt: skip
    db("INSERT INTO segments.members VALUES ('do_not_retarget', 'hourly', 'test', ?, ?, ?, NULL, false, 'test')",
       [as_of, customer, person])  # fmt: skip
    assert not db("SELECT 1 FROM segments.audiences WHERE person_id = ? AND destination = 'meta'", [person])
    dry = run("daily_retention", DAY, selection=[SYNC_DAILY],
              run_config={"ops": {"sync__activation_daily": {"config": {"dry_run": True}}}})  # fmt: skip
    evaluation = next(
        e
        for e in dry.get_asset_check_evaluations()
        if e.check_name == "do_not_retarget_disjoint_from_ad_audiences"
    )
    assert not evaluation.passed
    assert evaluation.metadata["suppressed_people_acknowledged_in_ad_audiences"].value >= 1

    # The suppression partition is held by its size guard, and the acknowledged ad state is forgotten: a sync that
    # ignored the problem would upload every member again.
    db(
        "UPDATE segments.partitions SET guard_status = 'blocked', guard_reason = 'test' WHERE segment = 'do_not_retarget'"
    )
    db(in_ad_destinations("DELETE FROM sync.destination_state WHERE destination IN ({ads})"))
    ads = (meta, google, tiktok, pinterest)
    before = {id(s): destination_requests(s) for s in ads}

    result = run("daily_retention", DAY, selection=[SYNC_DAILY])

    assert {id(s): destination_requests(s) for s in ads} == before
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "do_not_retarget_disjoint_from_ad_audiences"
    )
    assert not evaluation.passed and "cannot establish current suppression" in evaluation.description
    plan = result.asset_materializations_for_node("sync__activation_daily")[0].metadata["plan"].value
    assert "refused: cannot establish current suppression" in plan and "do_not_retarget is held" in plan
