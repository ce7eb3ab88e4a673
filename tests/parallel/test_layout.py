"""Layout arithmetic and validation (no process groups needed)."""

from __future__ import annotations

import pytest

from parallel.boundary import routes
from parallel.errors import BoundaryError, LayoutError
from parallel.layout import ParallelLayout, _hyper_comm_grid, check_world, placement


def test_degrees_must_multiply_to_size():
    with pytest.raises(LayoutError, match="do not multiply to its size 4"):
        ParallelLayout("lm", dp=2, cp=3, size=4)
    with pytest.raises(LayoutError, match="positive integer"):
        ParallelLayout("lm", dp=0)
    with pytest.raises(LayoutError, match="cp_ulysses=3 must divide cp=4"):
        ParallelLayout("lm", cp=4, cp_ulysses=3)
    assert ParallelLayout("lm", dp=2, cp=2, tp=2).size == 8


def test_placement_is_derived_and_partial_overlap_refused():
    enc = ParallelLayout("enc", dp=4)
    assert placement(enc, ParallelLayout("lm", dp=2, cp=2)) == "colocated"
    assert placement(ParallelLayout("enc", dp=2), ParallelLayout("lm", cp=2, rank_offset=2)) == "disjoint"
    with pytest.raises(LayoutError, match="overlap without being identical"):
        placement(ParallelLayout("enc", dp=2), ParallelLayout("lm", cp=2, rank_offset=1))
    with pytest.raises(LayoutError, match="world has 3"):
        check_world([ParallelLayout("enc", dp=2), ParallelLayout("lm", cp=2, rank_offset=2)], 3)


def test_coords_and_groups_follow_megatron_order(monkeypatch):
    lay = ParallelLayout("lm", dp=2, cp=4, tp=2, rank_offset=3, cp_ulysses=2)
    assert lay.coords(3) == {"tp": 0, "ulysses": 0, "ring": 0, "dp": 0, "cp": 0}
    assert lay.coords(3 + 2 + 4 + 8) == {"tp": 0, "ulysses": 1, "ring": 1, "dp": 1, "cp": 3}
    with pytest.raises(LayoutError, match="not in layout"):
        lay.coords(2)
    # the same rank groups as megatron-core's HyperCommGrid enumerates (which builds the real groups)
    monkeypatch.setenv("WORLD_SIZE", "19")
    grid = _hyper_comm_grid()([2, 2, 2, 2], ["tp", "ulysses", "ring", "dp"], rank_offset=3)
    for dims, grid_dims in ((("cp",), ["ulysses", "ring"]), (("dp", "cp"), ["ulysses", "ring", "dp"]),
                            (("tp",), ["tp"]), (("ring",), ["ring"]), (("tp", "dp"), ["tp", "dp"])):
        ours = sorted(tuple(lay.group_ranks(dims, r)) for r in lay.ranks)
        theirs = sorted(tuple(g) for g in grid.get_rank_enum(grid_dims) for _ in g)
        assert ours == theirs, dims
    with pytest.raises(LayoutError, match="unknown parallel dim"):
        lay.group_ranks("pp", 3)


def test_boundary_routes():
    fan_in = routes(ParallelLayout("enc", dp=4), ParallelLayout("lm", dp=2, rank_offset=4))
    assert [(r.src_lane, r.dst_lane, r.dst_order) for r in fan_in] == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    fan_out = routes(ParallelLayout("enc", dp=1), ParallelLayout("lm", dp=2, rank_offset=1))
    assert [(r.dst_lane, r.src_piece, r.src_parts) for r in fan_out] == [(0, 0, 2), (1, 1, 2)]
    with pytest.raises(BoundaryError, match="must divide one another"):
        routes(ParallelLayout("enc", dp=2), ParallelLayout("lm", dp=3, rank_offset=2))
