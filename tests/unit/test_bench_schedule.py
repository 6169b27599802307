"""Interleaved blocks (A B A B ...) and Poisson arrivals."""

import itertools
import random
import statistics

import pytest

from qwenvl_serve.bench.schedule import Block, interleaved_blocks, poisson_offsets, split_evenly


def test_split_evenly():
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    assert split_evenly(2, 4) == [1, 1, 0, 0]
    assert sum(split_evenly(97, 7)) == 97
    with pytest.raises(ValueError, match="at least 1"):
        split_evenly(3, 0)


def test_targets_take_turns_round_by_round():
    blocks = interleaved_blocks(targets=2, rounds=3, requests=7)
    assert [(b.round, b.target) for b in blocks] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert [b.requests for b in blocks] == [3, 3, 2, 2, 2, 2]


def test_each_target_gets_all_its_requests_and_empty_rounds_are_dropped():
    blocks = interleaved_blocks(targets=3, rounds=5, requests=2)
    assert len(blocks) == 6
    for target in range(3):
        assert sum(b.requests or 0 for b in blocks if b.target == target) == 2


def test_duration_is_split_across_rounds():
    blocks = interleaved_blocks(targets=2, rounds=4, duration_s=20.0)
    assert blocks[0] == Block(round=0, target=0, seconds=5.0)
    assert len(blocks) == 8


def test_exactly_one_of_requests_or_duration():
    with pytest.raises(ValueError, match="either"):
        interleaved_blocks(2, 2)
    with pytest.raises(ValueError, match="either"):
        interleaved_blocks(2, 2, requests=4, duration_s=1.0)


def test_poisson_offsets_have_the_asked_rate_and_are_reproducible():
    offsets = poisson_offsets(4.0, random.Random(7), count=4000)
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)  # exponential: sd = mean
    assert poisson_offsets(4.0, random.Random(7), count=4000) == offsets


def test_poisson_offsets_stop_at_the_horizon():
    offsets = poisson_offsets(10.0, random.Random(1), horizon_s=3.0)
    assert max(offsets) < 3.0
    assert 15 < len(offsets) < 50
    with pytest.raises(ValueError, match="positive"):
        poisson_offsets(0, random.Random(1), count=3)
