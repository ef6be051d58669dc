"""Campaign targeting at book scale (issue 18 item 5) on PostgreSQL, in one run:

1. targeting over 1,000,000 customers: the segment (stage, tier, churn score band) read
   set-wise, the contact policy's blocks for the whole tenant, the stable-hash control arm and
   the priority ranking -- ``cvm campaigns check`` (target <= 60 s) -- then the launch of the
   same campaign with a 50,000 cap (members and contacts written);
2. a volume-capped outbound run over 100,000 customers (another tenant): the launch with a
   10,000 cap, then checks read back from the database that the cap was never exceeded and
   that it filled highest priority first (every eligible treatment customer left out scores
   below every one contacted).

The customers are loaded once with COPY into a kept bench database (``cvm_bench_campaigns``
on the test server, never the test database): stage, tier of record, a churn score, 1% flagged
do-not-contact and 2% e-mailed two days ago. Each run first removes the previous runs'
campaigns and their contacts, so runs repeat.

    python bench/campaign_targeting.py                 # 1,000,000 + 100,000 customers
    python bench/campaign_targeting.py --customers 200000 --outbound 50000
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import delete, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.campaigns import service, stats  # noqa: E402
from app.campaigns.schemas import CampaignRequest, LaunchResult, PowerCheck  # noqa: E402
from app.campaigns.tables import Campaign, CampaignMember, CampaignReportRow  # noqa: E402
from app.contact.service import ContactPolicy, blocked_customers  # noqa: E402
from app.contact.states import ContactChannel, ContactPurpose  # noqa: E402
from app.contact.tables import ContactRecord  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_db_engine  # noqa: E402
from tests.db_support import postgres_server_url  # noqa: E402

DATABASE = "cvm_bench_campaigns"
BOOK_TENANT = "bench-book"
OUTBOUND_TENANT = "bench-outbound"
STAGES = ("active", "at_risk", "dormant", "new", "lost")
STAGE_SHARES = (0.6, 0.15, 0.1, 0.1, 0.05)
TIERS = ("mass", "emerging_affluent", "affluent", "high_net_worth", "private")
TIER_SHARES = (0.6, 0.25, 0.1, 0.04, 0.01)
TIERS_TARGETED = ["emerging_affluent", "affluent", "high_net_worth", "private"]


def bench_url() -> str:
    """The kept bench database on the test server, created when missing."""
    server = postgres_server_url()
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if found is None:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')
    return server.set(database=DATABASE).render_as_string(hide_password=False)


def load(url: str, tenant: str, customers: int, seed: int) -> float:
    """COPY ``customers`` customers of ``tenant`` in (once: kept between runs); seconds."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        have = connection.execute(
            "SELECT count(*) FROM customer_stage WHERE tenant = %s", (tenant,)
        ).fetchone()
        if have is not None and have[0] == customers:
            return 0.0
        started = time.perf_counter()
        for table in ("customer_stage", "tier_movement", "score", "do_not_contact"):
            connection.execute(f"DELETE FROM {table} WHERE tenant = %s", (tenant,))
        rng = np.random.default_rng(seed)
        stage = rng.choice(len(STAGES), customers, p=STAGE_SHARES)
        tier = rng.choice(len(TIERS), customers, p=TIER_SHARES)
        churn = rng.beta(2, 5, customers)
        now = datetime.now(UTC)
        ids = [f"{tenant[6:9].upper()}{i:08d}" for i in range(customers)]
        with connection.cursor() as cursor:
            with cursor.copy(
                "COPY customer_stage (tenant, customer_id, stage, since, at_risk, updated_at)"
                " FROM STDIN"
            ) as copy:
                for i, customer in enumerate(ids):
                    copy.write_row((tenant, customer, STAGES[stage[i]], now, False, now))
            with cursor.copy(
                "COPY tier_movement (tenant, customer_id, to_tier, reason, policy_version,"
                " month, run_id, moved_at) FROM STDIN"
            ) as copy:
                for i, customer in enumerate(ids):
                    copy.write_row(
                        (tenant, customer, TIERS[tier[i]], "initial", "bench", "2026-11", "b", now)
                    )
            with cursor.copy(
                "COPY score (request_id, task, customer_id, outputs, reasons, features,"
                " created_at, tenant, source, probability) FROM STDIN"
            ) as copy:
                for i, customer in enumerate(ids):
                    copy.write_row(
                        (
                            "bench",
                            "churn",
                            customer,
                            "{}",
                            "[]",
                            "{}",
                            now,
                            tenant,
                            "batch",
                            float(churn[i]),
                        )
                    )
            with cursor.copy(
                "COPY do_not_contact (tenant, customer_id, reason, recorded_by, created_at)"
                " FROM STDIN"
            ) as copy:
                for customer in ids[::100]:
                    copy.write_row((tenant, customer, "bench", "bench", now))
        connection.commit()
        connection.execute("ANALYZE")
        return time.perf_counter() - started


def reset(url: str) -> None:
    """Remove earlier runs' campaigns and contacts; e-mail 2% of each book two days ago."""
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            session.execute(delete(CampaignReportRow))
            session.execute(delete(CampaignMember))
            session.execute(delete(Campaign))
            session.execute(delete(ContactRecord))
            for tenant in (BOOK_TENANT, OUTBOUND_TENANT):
                session.execute(
                    text(
                        "INSERT INTO contact_record (tenant, customer_id, channel, purpose, at,"
                        " recorded_by) SELECT tenant, customer_id, 'email', 'marketing',"
                        " :at, 'bench' FROM customer_stage WHERE tenant = :tenant"
                        " AND right(customer_id, 2) = '07'"
                    ),
                    {"tenant": tenant, "at": datetime.now(UTC) - timedelta(days=2)},
                )
            session.commit()
    finally:
        engine.dispose()


def draft(url: str, tenant: str, code: str, **changes: object) -> int:
    """A retention campaign on the targeted tiers, ranked by churn score."""
    body: dict[str, object] = {
        "code": code,
        "name": code,
        "action": "retention_offer",
        "channel": "email",
        "purpose": "retention",
        "target": {
            "stages": ["active", "at_risk"],
            "tiers": TIERS_TARGETED,
            "scores": [{"task": "churn", "min": 0.1}],
        },
        "priority_task": "churn",
        "starts_at": datetime.now(UTC).isoformat(),
        "control_rate": 0.02,
        "baseline_rate": 0.05,
        "minimum_lift": 0.01,
    }
    body.update(changes)
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            return service.create_campaign(
                session,
                tenant=tenant,
                request=CampaignRequest.model_validate(body),
                tier_names=list(TIERS),
                created_by="bench",
                now=datetime.now(UTC),
            ).id
    finally:
        engine.dispose()


def timed_check(url: str, tenant: str, campaign_id: int) -> tuple[float, PowerCheck]:
    """The pre-launch targeting of one campaign; seconds and its result."""
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            started = time.perf_counter()
            check = service.check_campaign(
                session,
                tenant=tenant,
                campaign_id=campaign_id,
                policy=ContactPolicy(),
                now=datetime.now(UTC),
            )
            return time.perf_counter() - started, check
    finally:
        engine.dispose()


def timed_launch(url: str, tenant: str, campaign_id: int) -> tuple[float, LaunchResult]:
    """The launch of one campaign; seconds and its result."""
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            started = time.perf_counter()
            result = service.launch_campaign(
                session,
                tenant=tenant,
                campaign_id=campaign_id,
                policy=ContactPolicy(),
                now=datetime.now(UTC),
            )
            return time.perf_counter() - started, result
    finally:
        engine.dispose()


def verify_outbound(url: str, campaign_id: int, cap: int, period: str) -> tuple[int, float, float]:
    """Contacted count, lowest score contacted and highest eligible treatment score left out
    (read back from the database); raises when the cap or the order is broken."""
    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            members = session.execute(
                select(CampaignMember.customer_id, CampaignMember.arm, CampaignMember.score)
                .where(CampaignMember.campaign_id == campaign_id)
                .order_by(CampaignMember.rank)
            ).all()
            campaign = session.get(Campaign, campaign_id)
            assert campaign is not None
            audience = session.execute(service.audience_query(campaign)).all()
            blocked = blocked_customers(
                session,
                policy=ContactPolicy(),
                tenant=campaign.tenant,
                channel=ContactChannel.EMAIL,
                purpose=ContactPurpose.RETENTION,
                at=datetime.now(UTC),
            )
            contacts = session.scalar(
                text("SELECT count(*) FROM contact_record WHERE recorded_by = :by"),
                {"by": f"campaign:{campaign_id}"},
            )
    finally:
        engine.dispose()
    treated = [m for m in members if m.arm == "treatment"]
    if len(treated) > cap or contacts != len(treated):
        raise SystemExit(f"cap broken: {len(treated)} contacted, {contacts} recorded, cap {cap}")
    chosen = {m.customer_id for m in members}
    lowest = min(m.score for m in treated)
    left_out = [
        score
        for customer, score in audience
        # Blocked customers are left out whatever their score: only the others count.
        if customer not in chosen
        and customer not in blocked
        and not stats.in_control(customer, period, 0.02)
    ]
    return len(treated), lowest, max(left_out) if left_out else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--outbound", type=int, default=100_000)
    parser.add_argument("--book-cap", type=int, default=50_000)
    parser.add_argument("--outbound-cap", type=int, default=10_000)
    args = parser.parse_args()
    url = bench_url()
    upgrade(url)
    loaded = load(url, BOOK_TENANT, args.customers, seed=1)
    loaded += load(url, OUTBOUND_TENANT, args.outbound, seed=2)
    print(f"loaded with COPY in {loaded:.1f} s" if loaded else "book already loaded")
    reset(url)
    stamp = datetime.now(UTC).strftime("%H%M%S")

    book_id = draft(url, BOOK_TENANT, f"BOOK-{stamp}", volume_cap=args.book_cap)
    seconds, check = timed_check(url, BOOK_TENANT, book_id)
    print(
        f"targeting {args.customers:,} customers: {seconds:.1f} s -- segment "
        f"{check.segment_customers:,}, blocked {sum(b.customers for b in check.blocked):,}, "
        f"treatment {check.treatment:,}, control {check.control:,} "
        f"(needed {check.required_treatment:,} / {check.required_control:,}, "
        f"sufficient: {check.sufficient})"
    )
    seconds, launched = timed_launch(url, BOOK_TENANT, book_id)
    print(
        f"launch over {args.customers:,} customers, cap {args.book_cap:,}: {seconds:.1f} s -- "
        f"{launched.check.treatment:,} contacted, {launched.check.control:,} held out"
    )

    outbound_id = draft(
        url, OUTBOUND_TENANT, f"OUT-{stamp}", volume_cap=args.outbound_cap, control_rate=0.02
    )
    seconds, launched = timed_launch(url, OUTBOUND_TENANT, outbound_id)
    contacted, lowest, highest_left = verify_outbound(
        url, outbound_id, args.outbound_cap, launched.campaign.period
    )
    order_ok = not highest_left > lowest
    print(
        f"outbound over {args.outbound:,} customers, cap {args.outbound_cap:,}: {seconds:.1f} s"
        f" -- {contacted:,} contacted (cap never exceeded), lowest score contacted "
        f"{lowest:.4f}, highest eligible left out {highest_left:.4f}: highest priority first: "
        f"{order_ok}"
    )
    if not order_ok:
        raise SystemExit("the cap was not filled highest priority first")


if __name__ == "__main__":
    main()
