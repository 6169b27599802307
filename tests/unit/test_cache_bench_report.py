"""The cache benchmark's pairing: each ratio to /health is taken within its own round."""

from __future__ import annotations

from typing import Any

from benchmarks.cache.hits import (
    HEALTH,
    HEALTH_AGAIN,
    _cells,
    cell_order,
    ratios_to_health,
    report,
)


def _row(round_number: int, target: str, rps: float, **extra: float) -> dict[str, Any]:
    return {"round": round_number, "request": "text", "c": 8, "target": target, "rps": rps,
            "p50_ms": 1.0, "p99_ms": 2.0, "non_2xx": 0.0, **extra}  # fmt: skip


def test_every_round_measures_each_target_once_with_the_a_a_twin_next_to_health() -> None:
    for round_number in range(5):
        order = cell_order(round_number)
        assert sorted(order) == sorted(["bare", "memory", "redis", HEALTH, HEALTH_AGAIN])
        assert order[order.index(HEALTH) + 1] == HEALTH_AGAIN
    assert len({cell_order(n)[0] for n in range(4)}) == 4  # the first place rotates


def test_ratios_pair_a_target_with_the_health_run_of_its_own_round() -> None:
    rows = [
        _row(0, HEALTH, 1000.0),
        _row(0, "memory", 800.0),
        _row(1, HEALTH, 2000.0),
        _row(1, "memory", 1800.0),
    ]
    cells = _cells({"rows": rows})
    assert ratios_to_health(cells, "text", 8, "memory") == [0.8, 0.9]


def test_report_gives_medians_the_ratio_range_and_the_a_a_row() -> None:
    rows = [
        _row(0, HEALTH, 1000.0, cpu_us=100.0),
        _row(0, HEALTH_AGAIN, 1100.0, cpu_us=90.0),
        _row(0, "memory", 800.0, cpu_us=120.0),
        _row(1, HEALTH, 2000.0, cpu_us=110.0),
        _row(1, HEALTH_AGAIN, 1900.0, cpu_us=100.0),
        _row(1, "memory", 1800.0, cpu_us=130.0),
        _row(2, HEALTH, 1000.0, cpu_us=105.0),
        _row(2, HEALTH_AGAIN, 1000.0, cpu_us=95.0),
        _row(2, "memory", 700.0, cpu_us=125.0),
    ]
    text = report({"seconds": 6, "rounds": 3, "cpu_count": 2, "rows": rows})
    memory = next(line for line in text.splitlines() if "cache on memory" in line)
    assert "| 800 | 0.80 (0.70–0.90) |" in memory
    assert "| 125 |" in memory
    twin = next(line for line in text.splitlines() if "(A/A)" in line)
    assert "| 1.00 (0.95–1.10) |" in twin
