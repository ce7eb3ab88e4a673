"""Per-module parallel layouts and their process groups.

A `ParallelLayout` names one module's degrees (tp fastest, then cp, then dp: Megatron's "tp-cp-dp"
order) and where its ranks sit (`rank_offset`, `size`). `build()` creates the process groups of every
combination of dims through megatron-core's `HyperCommGrid`. Group creation is collective over the
whole world: build every layout on every rank, in the same order, even on ranks outside it.

The cp dim is itself a 2-D grid, `ulysses` (inner, consecutive cp ranks) x `ring` (outer), so USP
(Ulysses inside, ring across) gets its groups from the same grid; with `cp_ulysses=None` the ulysses
sub-dim spans the whole cp dim.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch.distributed as dist

from parallel.errors import LayoutError

DIMS = ("tp", "cp", "dp")
SUB_DIMS = ("ulysses", "ring")
# grid dims handed to HyperCommGrid, fastest first; "cp" expands to the two sub-dims
_GRID_DIMS = ["tp", "ulysses", "ring", "dp"]
DimSpec = str | tuple[str, ...] | list[str]


@dataclass(frozen=True)
class ParallelLayout:
    name: str
    dp: int = 1
    cp: int = 1
    tp: int = 1
    rank_offset: int = 0
    size: int = 0  # 0: derived (dp*cp*tp); otherwise it must equal the product
    cp_ulysses: int | None = None  # Ulysses degree inside cp for USP; None: all of cp

    def __post_init__(self) -> None:
        for dim in DIMS:
            deg = getattr(self, dim)
            if not isinstance(deg, int) or deg < 1:
                raise LayoutError(f"layout {self.name!r}: {dim} must be a positive integer, got {deg!r}")
        if self.rank_offset < 0:
            raise LayoutError(f"layout {self.name!r}: rank_offset must be >= 0, got {self.rank_offset}")
        product = self.dp * self.cp * self.tp
        if self.size == 0:
            object.__setattr__(self, "size", product)
        elif self.size != product:
            raise LayoutError(f"layout {self.name!r}: degrees dp={self.dp} x cp={self.cp} x tp={self.tp} = "
                              f"{product} do not multiply to its size {self.size}")
        u = self.cp if self.cp_ulysses is None else self.cp_ulysses
        if u < 1 or self.cp % u:
            raise LayoutError(f"layout {self.name!r}: cp_ulysses={self.cp_ulysses} must divide cp={self.cp}")

    # ---- pure rank arithmetic (no process group needed) ----
    @property
    def ulysses(self) -> int:
        return self.cp if self.cp_ulysses is None else self.cp_ulysses

    @property
    def ring(self) -> int:
        return self.cp // self.ulysses

    @property
    def ranks(self) -> range:
        return range(self.rank_offset, self.rank_offset + self.size)

    def contains(self, rank: int) -> bool:
        return rank in self.ranks

    def degree(self, dims: DimSpec) -> int:
        out = 1
        for d in _expand(dims):
            out *= self._grid_shape()[d]
        return out

    def coords(self, rank: int) -> dict[str, int]:
        """Index of `rank` along tp, cp, dp (and the cp sub-dims ulysses, ring)."""
        if not self.contains(rank):
            raise LayoutError(f"rank {rank} is not in layout {self.name!r} (ranks {self.ranks.start}.."
                              f"{self.ranks.stop - 1})")
        r = rank - self.rank_offset
        out = {}
        for d in _GRID_DIMS:
            n = self._grid_shape()[d]
            out[d] = r % n
            r //= n
        out["cp"] = out["ulysses"] + self.ulysses * out["ring"]
        return out

    def rank_at(self, dp: int = 0, cp: int = 0, tp: int = 0) -> int:
        return self.rank_offset + tp + self.tp * (cp + self.cp * dp)

    def group_ranks(self, dims: DimSpec, rank: int) -> list[int]:
        """Global ranks of the `dims` group that holds `rank`, ordered by their index in that group."""
        c = self.coords(rank)
        want = set(_expand(dims))
        axes = [range(self._grid_shape()[d]) if d in want else [c[d]] for d in _GRID_DIMS]
        ranks = []
        for idx in itertools.product(*reversed(axes)):  # slowest dim outermost, so fastest varies first
            tp, u, ring, dp = reversed(idx)
            ranks.append(self.rank_at(dp=dp, cp=u + self.ulysses * ring, tp=tp))
        return ranks

    def _grid_shape(self) -> dict[str, int]:
        return {"tp": self.tp, "ulysses": self.ulysses, "ring": self.ring, "dp": self.dp}

    def build(self, backend: str | None = None, timeout: datetime.timedelta | float | None = None) -> BuiltLayout:
        """Create the process groups of every dim combination (collective over the whole world)."""
        if not dist.is_initialized():
            raise LayoutError(f"layout {self.name!r}: torch.distributed is not initialised")
        world = dist.get_world_size()
        if self.rank_offset + self.size > world:
            raise LayoutError(f"layout {self.name!r} needs ranks {self.rank_offset}..{self.rank_offset + self.size - 1}"
                              f" but the world has {world}")
        HyperCommGrid = _hyper_comm_grid()
        if isinstance(timeout, (int, float)):
            timeout = datetime.timedelta(seconds=timeout)
        kwargs = {} if timeout is None else {"timeout": timeout}
        grid = HyperCommGrid([self.tp, self.ulysses, self.ring, self.dp], list(_GRID_DIMS),
                             rank_offset=self.rank_offset, backend=backend)
        groups: dict[frozenset[str], dist.ProcessGroup | None] = {}
        by_members: dict[str, dist.ProcessGroup | None] = {}
        for combo in _all_combos():
            dims = sorted(combo, key=_GRID_DIMS.index)
            # combos over degree-1 dims enumerate the same ranks (e.g. tp+cp == cp when tp=1): one group
            key = repr(grid.get_rank_enum(dims))
            if key not in by_members:
                by_members[key] = grid.create_pg(dims, **kwargs)
            groups[combo] = by_members[key]
        return BuiltLayout(self, dist.get_rank(), groups)


@dataclass
class BuiltLayout:
    """A layout with its process groups, seen from one rank (`rank`)."""

    layout: ParallelLayout
    rank: int
    _groups: dict[frozenset[str], dist.ProcessGroup | None] = field(repr=False)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def is_member(self) -> bool:
        return self.layout.contains(self.rank)

    def contains(self, rank: int) -> bool:
        return self.layout.contains(rank)

    def group(self, dims: DimSpec) -> dist.ProcessGroup | None:
        """The group over `dims` ("cp", ("dp", "cp"), ...) holding this rank; None off the layout."""
        if not self.is_member:
            return None
        return self._groups[frozenset(_expand(dims))]

    def rank_in(self, dims: DimSpec) -> int:
        """This rank's index inside its `dims` group."""
        return self.layout.group_ranks(dims, self.rank).index(self.rank)

    def size_of(self, dims: DimSpec) -> int:
        return self.layout.degree(dims)

    def group_ranks(self, dims: DimSpec) -> list[int]:
        return self.layout.group_ranks(dims, self.rank)

    def coords(self) -> dict[str, int]:
        return self.layout.coords(self.rank)

    def context_parallel(self, mode: Literal["ulysses", "ring", "usp"] = "ulysses",
                         heads_fallback: Literal["ring", "error"] = "ring", stats=None):
        """The `ContextParallel` handle of this rank's cp group (None when cp == 1 or off the layout)."""
        from parallel.attention import ContextParallel

        if not self.is_member or self.layout.cp == 1:
            return None
        if mode == "usp":
            if self.layout.cp_ulysses is None:
                raise LayoutError(f"layout {self.name!r}: usp needs cp_ulysses (the Ulysses degree inside cp)")
            return ContextParallel(self.group("cp"), "usp", ulysses_group=self.group("ulysses"),
                                   ring_group=self.group("ring"), heads_fallback=heads_fallback, stats=stats)
        return ContextParallel(self.group("cp"), mode, heads_fallback=heads_fallback, stats=stats)


def _hyper_comm_grid():
    """megatron-core's HyperCommGrid, loaded from its own file.

    `import megatron.core.hyper_comm_grid` first runs megatron.core's package __init__ (DDP, optimizer,
    FSDP: ~5 s of CPU per process), which every spawned rank would pay; the grid module itself needs only
    numpy, einops and torch.distributed.
    """
    import importlib.util
    import sys

    name = "_vfm_megatron_hyper_comm_grid"
    if name in sys.modules:
        return sys.modules[name].HyperCommGrid
    if "megatron.core.hyper_comm_grid" in sys.modules:  # already imported the ordinary way
        return sys.modules["megatron.core.hyper_comm_grid"].HyperCommGrid
    spec = importlib.util.find_spec("megatron")
    if spec is None or not spec.submodule_search_locations:
        raise LayoutError("megatron-core is not installed (it provides HyperCommGrid)")
    import os

    path = os.path.join(list(spec.submodule_search_locations)[0], "core", "hyper_comm_grid.py")
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    import warnings

    with warnings.catch_warnings():  # it warns that absl is missing and falls back to logging: fine
        warnings.simplefilter("ignore")
        mod_spec.loader.exec_module(module)
    return module.HyperCommGrid


def _expand(dims: DimSpec) -> list[str]:
    names = [dims] if isinstance(dims, str) else list(dims)
    out: list[str] = []
    for d in names:
        if d == "cp":
            out += ["ulysses", "ring"]
        elif d in _GRID_DIMS:
            out.append(d)
        else:
            raise LayoutError(f"unknown parallel dim {d!r}; expected one of {DIMS + SUB_DIMS}")
    return out


def _all_combos() -> Iterable[frozenset[str]]:
    """Every group a user can ask for: any non-empty subset of tp/cp/dp, plus the cp sub-dims alone."""
    seen = []
    for n in range(1, len(DIMS) + 1):
        for combo in itertools.combinations(DIMS, n):
            seen.append(frozenset(_expand(combo)))
    seen += [frozenset(["ulysses"]), frozenset(["ring"])]
    return seen


def placement(a: ParallelLayout, b: ParallelLayout) -> Literal["colocated", "disjoint"]:
    """How two modules' ranks relate: identical ("colocated") or disjoint; anything else is an error."""
    ra, rb = set(a.ranks), set(b.ranks)
    if ra == rb:
        return "colocated"
    if not ra & rb:
        return "disjoint"
    raise LayoutError(f"layouts {a.name!r} (ranks {a.ranks.start}..{a.ranks.stop - 1}) and {b.name!r} "
                      f"(ranks {b.ranks.start}..{b.ranks.stop - 1}) overlap without being identical")


def check_world(layouts: Iterable[ParallelLayout], world_size: int) -> None:
    """Every layout fits in the world and every pair is colocated or disjoint."""
    layouts = list(layouts)
    for lay in layouts:
        if lay.rank_offset + lay.size > world_size:
            raise LayoutError(f"layout {lay.name!r} needs ranks up to {lay.rank_offset + lay.size - 1} but the "
                              f"world has {world_size}")
    for a, b in itertools.combinations(layouts, 2):
        placement(a, b)
