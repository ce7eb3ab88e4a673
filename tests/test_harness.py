"""The rank-spawning helper itself: results come back in rank order, and one failing rank fails the test
on every rank within the process-group timeout instead of hanging."""

import time

import pytest
import torch
import torch.distributed as dist

from tests.helpers.distributed import RankFailure, run_ranks


def _allreduce_body(rank, world_size):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return t.item()


def _one_rank_fails(rank, world_size):
    if rank == 1:
        raise ValueError("rank one broke")
    t = torch.zeros(1)
    dist.all_reduce(t)  # the others wait here until the failed rank's group is torn down
    return rank


@pytest.mark.distributed
def test_run_ranks_collects_results():
    assert run_ranks(_allreduce_body, world_size=2) == [3.0, 3.0]


@pytest.mark.distributed
def test_failing_rank_fails_fast():
    start = time.monotonic()
    with pytest.raises(RankFailure, match="rank one broke"):
        run_ranks(_one_rank_fails, world_size=2)
    assert time.monotonic() - start < 90
