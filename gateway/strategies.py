"""Ordering a route's candidates for one request, with the reason for the order.

The first candidate is tried first; the rest are the fallbacks tried (in
order) when an attempt fails before its first token.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from catalog.targets import Target
from gateway.health import HealthRegistry

# Share of latency-routed requests sent to a random candidate, so a deployment
# that recovered (or was never measured) is noticed.
LATENCY_EXPLORATION = 0.05


@dataclass(frozen=True)
class Candidate:
    target: Target
    weight: int
    position: int


def order_candidates(strategy: str, candidates: list[Candidate], *, health: HealthRegistry,
                     rng: random.Random) -> tuple[list[Candidate], str]:
    """(candidates in the order to try them, why the first one). Candidates at a
    capacity cap are skipped (not overloaded); unavailable (breaker open) ones go
    last, so they are tried only if all else failed."""
    healthy = [c for c in candidates if health.is_available(c.target.deployment_id)]
    at_capacity = [c for c in healthy if not health.has_capacity(c.target)]
    healthy = [c for c in healthy if c not in at_capacity]
    resting = [c for c in candidates if c not in healthy and c not in at_capacity]
    by_position = sorted(healthy, key=lambda c: c.position)
    n = len(healthy)
    if not healthy:
        if at_capacity and not resting:
            return [], f"all {len(at_capacity)} candidates are at their capacity caps"
        return sorted(resting, key=lambda c: c.position), "every candidate's breaker is open; trying anyway"
    if strategy == "cost":
        ordered = sorted(by_position, key=lambda c: c.target.prices.input_per_mtok + c.target.prices.output_per_mtok)
        reason = f"cheapest healthy of {n}"
    elif strategy == "latency":
        def ttft(c):
            value = health.ttft_ms(c.target.deployment_id)
            return -1.0 if value is None else value  # unmeasured first: measure it

        ordered = sorted(by_position, key=ttft)
        if n > 1 and rng.random() < LATENCY_EXPLORATION:
            ordered.insert(0, ordered.pop(rng.randrange(1, n)))
            reason = f"exploring: random pick of {n}"
        else:
            measured = health.ttft_ms(ordered[0].target.deployment_id)
            reason = (f"lowest time to first token ({measured:.0f} ms) of {n}" if measured is not None
                      else f"not yet measured, of {n}")
    elif strategy == "weighted":
        ordered, pool = [], list(by_position)
        while pool:
            pick = rng.choices(pool, weights=[max(c.weight, 0) or 1e-9 for c in pool])[0]
            ordered.append(pick)
            pool.remove(pick)
        reason = f"weighted pick of {n}"
    elif strategy == "least_busy":
        ordered = sorted(by_position, key=lambda c: health.in_flight(c.target.deployment_id))
        reason = f"fewest in flight ({health.in_flight(ordered[0].target.deployment_id)}) of {n}"
    elif strategy == "capability":
        ordered = by_position
        reason = f"first of {n} with the required capabilities"
    else:  # fallback
        ordered = by_position
        reason = f"first healthy in fallback order of {n}"
    return ordered + sorted(resting, key=lambda c: c.position), reason
