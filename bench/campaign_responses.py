"""Simulated responses to a launched campaign, as campaign_response events for ``cvm ingest``
(the README's campaign report on the synthetic book; the synthetic book has no campaign of
its own to respond to).

Every member answers once, when the script runs (after the launch): ``accepted`` with probability
``base + treated_gain * score`` when contacted and ``base + held_gain * score`` when held
out (score: the priority task's score at launch), else ``opened``. Seeded: the same file
for the same campaign and seed.

    python bench/campaign_responses.py --campaign 1 --out var/responses.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.campaigns.tables import Campaign, CampaignMember  # noqa: E402
from app.config import get_settings  # noqa: E402
from app.db.session import create_db_engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=float, default=0.03)
    parser.add_argument("--treated-gain", type=float, default=0.30)
    parser.add_argument("--held-gain", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    engine = create_db_engine(get_settings().database_url)
    try:
        with Session(engine) as session:
            campaign = session.get(Campaign, args.campaign)
            if campaign is None or campaign.launched_at is None:
                raise SystemExit(f"campaign {args.campaign} is not launched")
            members = session.execute(
                select(CampaignMember.customer_id, CampaignMember.arm, CampaignMember.score)
                .where(CampaignMember.campaign_id == campaign.id)
                .order_by(CampaignMember.rank)
            ).all()
    finally:
        engine.dispose()
    rng = np.random.default_rng(args.seed)
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["event_id", "type", "customer_id", "occurred_at", "campaign_id", "response"]
        )
        for member in members:
            gain = args.treated_gain if member.arm == "treatment" else args.held_gain
            accepted = rng.random() < args.base + gain * (member.score or 0.0)
            writer.writerow(
                [
                    f"{campaign.code}-{member.customer_id}",
                    "campaign_response",
                    member.customer_id,
                    at,
                    campaign.code,
                    "accepted" if accepted else "opened",
                ]
            )
    print(f"{len(members)} responses written to {args.out}")


if __name__ == "__main__":
    main()
