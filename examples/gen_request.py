#!/usr/bin/env python3
"""Writes examples/request.json: a realistic PZN scoring request.

300 candidates with Zipf-like popularity, listener-level predictions
(p_skip, p_complete, p_save), a few percent of tracks in promotion
campaigns with varied delivery states (under- and over-delivering, one
inactive, one limited to other markets, one limited to other surfaces).
Deterministic (fixed seed) so the file is reproducible.

    python3 examples/gen_request.py > examples/request.json
"""
import json, math, random

rng = random.Random(20261125)
NOW = 1_781_524_800_000  # 2026-06-15T12:00:00Z
DAY = 86_400_000
N = 300
labels = [f"label-{i}" for i in range(12)]
artists = [f"artist-{i}" for i in range(120)]

campaigns = [
    # id, start, end, surfaces, markets, target, delivered, expected
    ("cmp-under", NOW - 10 * DAY, NOW + 20 * DAY, None, [], 30000, 6000, 10000),
    ("cmp-over", NOW - 10 * DAY, NOW + 20 * DAY, None, ["SE", "NO", "DK"], 20000, 11000, 6667),
    ("cmp-ontrack", NOW - 5 * DAY, NOW + 25 * DAY, ["radio", "autoplay"], [], 12000, 2000, 2000),
    ("cmp-ended", NOW - 40 * DAY, NOW - 10 * DAY, None, [], 5000, 5000, 5000),
    ("cmp-us-only", NOW - 3 * DAY, NOW + 27 * DAY, None, ["US", "CA"], 50000, 4000, 5000),
    ("cmp-mixes", NOW - 8 * DAY, NOW + 22 * DAY, ["daily_mix", "genre_mix"], [], 8000, 2100, 2133),
]

def campaign(c):
    cid, start, end, surfaces, markets, target, delivered, expected = c
    out = {"id": cid, "start_ms": start, "end_ms": end, "markets": markets,
           "delivery_target": target, "delivered": delivered, "expected_by_now": expected,
           "pacing_integral": round(rng.uniform(-0.05, 0.1), 4),
           "pacing_last_error": round((expected - delivered) / target * 0.9, 4),
           "commission_bps": rng.choice([2000, 3000])}
    if surfaces is not None:
        out["surfaces"] = surfaces
    return out

campaign_objs = [campaign(c) for c in campaigns]
promoted_slots = set(rng.sample(range(N), 18))
candidates = []
for i in range(N):
    rank = i + 1
    relevance = round(0.95 * (rank ** -0.35) + rng.uniform(-0.03, 0.03), 4)
    popularity = round(1.0 / (1 + rng.paretovariate(1.2)), 4)
    p_skip = round(min(0.95, max(0.02, rng.betavariate(2, 5) + (0.25 - relevance) * 0.3)), 4)
    cand = {
        "id": f"spotify:track:{rng.getrandbits(64):016x}",
        "relevance": relevance,
        "artist": rng.choice(artists[: 30 if rng.random() < 0.5 else 120]),
        "rights_holder": labels[min(11, int(rng.expovariate(0.4)))],
        "impressions_24h": rng.choice([0, 0, 0, 0, 1, 2, 3]),
        "session_promoted": rng.choice([0, 0, 0, 0, 0, 1]),
        "features": {
            "p_skip": p_skip,
            "p_complete": round(max(0.0, 1 - p_skip - rng.uniform(0, 0.15)), 4),
            "p_save": round(rng.betavariate(1, 12), 4),
            "popularity": popularity,
            "release_age_days": rng.randint(0, 4000),
            "holder_exposure_7d": None,
        },
    }
    if i in promoted_slots:
        cand["campaign"] = campaign_objs[len(candidates) % len(campaign_objs)]
    candidates.append(cand)

# Exposure accumulated by each rights holder over 7 days (attention share).
exposure = {h: round(rng.uniform(0.01, 0.3), 4) for h in labels}
for c in candidates:
    c["features"]["holder_exposure_7d"] = exposure[c["rights_holder"]]

request = {
    "context": {
        "request_id": "example-0001",
        "listener_id": "listener-8c1f",
        "session_id": "session-51e0",
        "surface": "radio",
        "market": "SE",
        "timestamp_ms": NOW,
        "seed": 1234567,
        "features": {"local_hour": 20, "session_position": 7, "session_skip_rate": 0.18},
    },
    "candidates": candidates,
}
print(json.dumps(request, indent=1))
