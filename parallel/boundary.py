"""Boundary communicators: hand one module's output batch to the next module's layout.

Both sides split each global (micro)batch along dim 0 by data-parallel slot: slot i of D holds samples
[i*B/D, (i+1)*B/D). Ranks of a slot that differ in tp/cp are replicas of that slot's batch.

Gradients follow the package's partial rule (see parallel/sequence.py): the gradient a source rank
gets back is its share; summing a module's gradients over its (dp, cp) group gives the true gradient.

- `ColocatedBoundary` (both layouts on the same ranks): one autograd Function that fans in (all-gather
  along batch inside the destination's data-parallel lane), fans out (narrow to this rank's slot) or
  passes through, and does the reverse in backward.
- `P2PBoundary` (disjoint ranks): the first rank of each data-parallel lane is its leader; source
  leaders send their pieces to destination leaders (a header with the dtype and shape first, then the
  data, batched point-to-point), and each destination leader broadcasts inside its TP x CP group. In
  backward the destination lane sums its gradients onto the leader, which sends every source leader its
  piece. The data keeps the sender's dtype (a float64 pipeline stays float64) unless the boundary is
  given a wire dtype; buffers live on this rank's device (parallel.device), so NCCL gets CUDA tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from parallel.comm import CommStats
from parallel.errors import BoundaryError
from parallel.layout import BuiltLayout, ParallelLayout, placement

LANE = ("tp", "cp")  # the dims that replicate one data-parallel slot
_HEADER = 9  # dtype code, ndim, up to 7 dims
# the dtypes a boundary carries, by wire code (the index)
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.bool,
           torch.uint8, torch.int8, torch.int16)


def make_boundary(src: BuiltLayout, dst: BuiltLayout, dtype: torch.dtype | None = None,
                  stats: CommStats | None = None, device: torch.device | None = None):
    """The communicator joining two built layouts (colocated or disjoint, derived from placements).
    `dtype`: the wire dtype of a disjoint boundary (None: each tensor travels in its own dtype)."""
    if placement(src.layout, dst.layout) == "colocated":
        return ColocatedBoundary(src, dst, stats)
    return P2PBoundary(src, dst, dtype, stats, device)


def _ratio(a: int, b: int, what: str) -> int:
    big, small = max(a, b), min(a, b)
    if big % small:
        raise BoundaryError(f"{what}: data-parallel degrees {a} and {b} must divide one another")
    return big // small


# ------------------------------------------------------------------------------------------------ colocated
@dataclass
class _ColocatedPlan:
    kind: str  # fan_in | fan_out | equal
    k: int  # degree ratio
    my_src: int  # this rank's source slot
    my_dst: int
    lane_slots: list[int]  # source slot of every rank of this rank's destination lane (group order)
    lane_group: object
    stats: CommStats | None = None


class ColocatedBoundary:
    def __init__(self, src: BuiltLayout, dst: BuiltLayout, stats: CommStats | None = None):
        if placement(src.layout, dst.layout) != "colocated":
            raise BoundaryError(f"{src.name!r} and {dst.name!r} are not colocated")
        s, d = src.layout, dst.layout
        k = _ratio(s.dp, d.dp, f"boundary {s.name}->{d.name}")
        kind = "equal" if s.dp == d.dp else ("fan_in" if s.dp > d.dp else "fan_out")
        for r in s.ranks:  # check the slot mapping for every rank, so every rank raises alike
            ss, ds = s.coords(r)["dp"], d.coords(r)["dp"]
            ok = {"equal": ss == ds, "fan_in": ss // k == ds, "fan_out": ds // k == ss}[kind]
            if not ok:
                raise BoundaryError(f"boundary {s.name}->{d.name}: rank {r} holds source slot {ss} but "
                                    f"destination slot {ds}; order the layouts so slots nest")
        if kind == "fan_in":
            for lane in range(d.dp):
                slots = {s.coords(r)["dp"] for r in d.group_ranks(LANE, d.rank_at(dp=lane))}
                if slots != set(range(lane * k, lane * k + k)):
                    raise BoundaryError(f"boundary {s.name}->{d.name}: destination lane {lane} holds source "
                                        f"slots {sorted(slots)}, expected {k} consecutive ones")
        self.src, self.dst = src, dst
        self.plan = None
        if src.is_member:
            lane_ranks = d.group_ranks(LANE, src.rank)
            self.plan = _ColocatedPlan(kind, k, s.coords(src.rank)["dp"], d.coords(src.rank)["dp"],
                                       [s.coords(r)["dp"] for r in lane_ranks], dst.group(LANE), stats)

    @property
    def kind(self) -> str:
        return self.plan.kind if self.plan else "none"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's source-slot batch in, its destination-slot batch out."""
        if self.plan is None:
            raise BoundaryError(f"rank {self.src.rank} is not on boundary {self.src.name}->{self.dst.name}")
        return _Colocated.apply(x, self.plan)


class _Colocated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan: _ColocatedPlan):
        ctx.plan, ctx.batch = plan, x.shape[0]
        if plan.kind == "equal":
            return x.clone()
        if plan.kind == "fan_out":
            if x.shape[0] % plan.k:
                raise BoundaryError(f"fan-out by {plan.k}: batch {x.shape[0]} does not divide")
            per = x.shape[0] // plan.k
            return x.narrow(0, (plan.my_dst % plan.k) * per, per).clone()
        parts = [torch.empty_like(x) for _ in plan.lane_slots]
        dist.all_gather(parts, x.contiguous(), group=plan.lane_group)
        if plan.stats is not None:  # ring all-gather: this rank's block travels P-1 hops
            plan.stats.add(x.numel() * x.element_size() * (len(parts) - 1))
        first = {}
        for i, slot in enumerate(plan.lane_slots):  # one copy of each slot, replicas dropped
            first.setdefault(slot, i)
        return torch.cat([parts[first[slot]] for slot in sorted(first)], dim=0)

    @staticmethod
    def backward(ctx, g):
        plan = ctx.plan
        if plan.kind == "equal":
            return g, None
        if plan.kind == "fan_out":
            out = g.new_zeros((ctx.batch, *g.shape[1:]))
            per = ctx.batch // plan.k
            out.narrow(0, (plan.my_dst % plan.k) * per, per).copy_(g)
            return out, None
        # reverse of the all-gather: sum the lane's partial gradients, keep this slot's rows, and split
        # them over the slot's replicas so the module's DP x CP sum counts them once
        g = g.contiguous().clone()
        dist.all_reduce(g, group=plan.lane_group)
        if plan.stats is not None:  # ring all-reduce volume
            n = len(plan.lane_slots)
            plan.stats.add(g.numel() * g.element_size() * 2 * (n - 1) // n)
        idx = sorted(set(plan.lane_slots)).index(plan.my_src)
        replicas = plan.lane_slots.count(plan.my_src)
        return g.narrow(0, idx * ctx.batch, ctx.batch) / replicas, None


# ----------------------------------------------------------------------------------------------- disjoint
@dataclass(frozen=True)
class Route:
    src_lane: int
    dst_lane: int
    src_piece: int  # which of `src_parts` equal pieces of the source batch
    src_parts: int
    dst_order: int  # position of this piece in the destination batch


def routes(src: ParallelLayout, dst: ParallelLayout) -> list[Route]:
    """Which source lane sends which piece of its batch to which destination lane."""
    k = _ratio(src.dp, dst.dp, f"boundary {src.name}->{dst.name}")
    if src.dp >= dst.dp:
        return [Route(i, i // k, 0, 1, i % k) for i in range(src.dp)]
    return [Route(i, i * k + t, t, k, 0) for i in range(src.dp) for t in range(k)]


class P2PBoundary:
    """Source ranks call `send` then later `recv_grad`; destination ranks call `recv` (autograd-aware)."""

    def __init__(self, src: BuiltLayout, dst: BuiltLayout, dtype: torch.dtype | None = None,
                 stats: CommStats | None = None, device: torch.device | None = None):
        if placement(src.layout, dst.layout) != "disjoint":
            raise BoundaryError(f"{src.name!r} and {dst.name!r} are not on disjoint ranks")
        if dtype is not None and dtype not in _DTYPES:
            raise BoundaryError(f"a boundary cannot carry {dtype}")
        if device is None:
            from parallel.device import rank_device

            device = rank_device().device
        self.src, self.dst, self.dtype, self.device = src, dst, dtype, torch.device(device)
        self.routes = routes(src.layout, dst.layout)
        self.rank = src.rank
        self.stats = stats
        self._works: list = []  # in-flight sends
        self._keep: list[torch.Tensor] = []  # their buffers, alive until the sends finish

    # ---- helpers
    def _src_leader(self, lane: int) -> int:
        return self.src.layout.rank_at(dp=lane)

    def _dst_leader(self, lane: int) -> int:
        return self.dst.layout.rank_at(dp=lane)

    @staticmethod
    def _tag(mb: int, kind: int, route: int) -> int:
        return (mb * 3 + kind) * 1024 + route

    def _lane(self, built: BuiltLayout) -> tuple[int, bool]:
        c = built.coords()
        return c["dp"], c["tp"] == 0 and c["cp"] == 0

    def _count(self, *tensors: torch.Tensor) -> None:
        if self.stats is not None:
            for t in tensors:
                self.stats.add(t.numel() * t.element_size())

    # ---- forward
    def send(self, x: torch.Tensor, mb: int = 0) -> None:
        """Source side: the lane leader sends its pieces (non-blocking; `wait()` finishes them)."""
        lane, leader = self._lane(self.src)
        if not leader:
            return
        ops = []
        for i, rt in enumerate(self.routes):
            if rt.src_lane != lane:
                continue
            if x.shape[0] % rt.src_parts:
                raise BoundaryError(f"fan-out by {rt.src_parts}: batch {x.shape[0]} does not divide")
            per = x.shape[0] // rt.src_parts
            piece = x.detach().narrow(0, rt.src_piece * per, per).to(self.device, self.dtype or x.dtype).contiguous()
            header = tensor_header(piece.shape, piece.dtype, self.device)
            peer = self._dst_leader(rt.dst_lane)
            ops.append(dist.P2POp(dist.isend, header, peer, tag=self._tag(mb, 0, i)))
            ops.append(dist.P2POp(dist.isend, piece, peer, tag=self._tag(mb, 1, i)))
            self._keep += [header, piece]
            self._count(header, piece)
        if ops:
            self._works += dist.batch_isend_irecv(ops)

    def recv(self, mb: int = 0) -> torch.Tensor:
        """Destination side: this lane's batch, replicated over its TP x CP group; requires grad."""
        lane, leader = self._lane(self.dst)
        group = self.dst.group(LANE)
        mine = [(i, rt) for i, rt in enumerate(self.routes) if rt.dst_lane == lane]
        if leader:
            headers = {i: torch.empty(_HEADER, dtype=torch.int64, device=self.device) for i, _ in mine}
            _wait(dist.batch_isend_irecv([dist.P2POp(dist.irecv, headers[i], self._src_leader(rt.src_lane),
                                                     tag=self._tag(mb, 0, i)) for i, rt in mine]))
            bufs = {i: empty_from_header(headers[i], self.device) for i, _ in mine}
            _wait(dist.batch_isend_irecv([dist.P2POp(dist.irecv, bufs[i], self._src_leader(rt.src_lane),
                                                     tag=self._tag(mb, 1, i)) for i, rt in mine]))
            data = torch.cat([bufs[i] for i, _ in sorted(mine, key=lambda m: m[1].dst_order)], dim=0)
            header = tensor_header(data.shape, data.dtype, self.device)
        else:
            header = torch.empty(_HEADER, dtype=torch.int64, device=self.device)
        root = self._dst_leader(lane)
        if dist.get_world_size(group) > 1:
            dist.broadcast(header, root, group=group)
            if not leader:
                data = empty_from_header(header, self.device)
            dist.broadcast(data, root, group=group)
            if leader:  # the leader feeds the lane (a tree or ring broadcast sends about this much)
                self._count(header, data)
        dtype = data.dtype if data.is_floating_point() else torch.float32
        anchor = torch.zeros((), dtype=dtype, device=self.device, requires_grad=True)
        return _P2PRecv.apply(anchor, data, self, mb)

    # ---- backward
    def _send_grad(self, g: torch.Tensor, mb: int) -> None:
        lane, leader = self._lane(self.dst)
        group = self.dst.group(LANE)
        g = g.to(self.device, self.dtype or g.dtype).contiguous().clone()
        if dist.get_world_size(group) > 1:  # partial gradients of the lane's replicas, summed on the leader
            dist.reduce(g, self._dst_leader(lane), group=group)
            if not leader:
                self._count(g)
        if not leader:
            return
        mine = sorted([(i, rt) for i, rt in enumerate(self.routes) if rt.dst_lane == lane],
                      key=lambda m: m[1].dst_order)
        per = g.shape[0] // len(mine)
        ops = []
        for j, (i, rt) in enumerate(mine):
            piece = g.narrow(0, j * per, per).contiguous()
            ops.append(dist.P2POp(dist.isend, piece, self._src_leader(rt.src_lane), tag=self._tag(mb, 2, i)))
            self._keep.append(piece)
            self._count(piece)
        self._works += dist.batch_isend_irecv(ops)

    def recv_grad(self, like: torch.Tensor, mb: int = 0) -> torch.Tensor:
        """Source side: the gradient of what `send` sent (the leader's; zeros on its replicas)."""
        lane, leader = self._lane(self.src)
        grad = torch.zeros_like(like)
        if not leader:
            return grad
        mine = [(i, rt) for i, rt in enumerate(self.routes) if rt.src_lane == lane]
        per = like.shape[0] // mine[0][1].src_parts
        bufs = {i: torch.empty((per, *like.shape[1:]), dtype=self.dtype or like.dtype, device=self.device)
                for i, _ in mine}
        _wait(dist.batch_isend_irecv([dist.P2POp(dist.irecv, bufs[i], self._dst_leader(rt.dst_lane),
                                                 tag=self._tag(mb, 2, i)) for i, rt in mine]))
        for i, rt in mine:
            grad.narrow(0, rt.src_piece * per, per).copy_(bufs[i].to(like.dtype))
        return grad

    def wait(self) -> None:
        """Finish every send this rank started (call once per step, after the backward)."""
        _wait(self._works)
        self._works.clear()
        self._keep.clear()


class _P2PRecv(torch.autograd.Function):
    """Makes the received batch part of the destination's graph; backward ships its gradient home."""

    @staticmethod
    def forward(ctx, anchor, data, boundary: P2PBoundary, mb: int):
        ctx.boundary, ctx.mb = boundary, mb
        return data.clone()

    @staticmethod
    def backward(ctx, g):
        ctx.boundary._send_grad(g, ctx.mb)
        return None, None, None, None


def tensor_header(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The handshake: dtype code, ndim, dims."""
    if len(shape) > _HEADER - 2:
        raise BoundaryError(f"boundary tensors have at most {_HEADER - 2} dims, got {len(shape)}")
    if dtype not in _DTYPES:
        raise BoundaryError(f"a boundary cannot carry {dtype}")
    h = torch.zeros(_HEADER, dtype=torch.int64)
    h[0] = _DTYPES.index(dtype)
    h[1] = len(shape)
    h[2:2 + len(shape)] = torch.tensor(list(shape), dtype=torch.int64)
    return h.to(device)


def empty_from_header(header: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A receive buffer for what the header announces."""
    h = header.cpu()
    n = int(h[1])
    return torch.empty(tuple(int(v) for v in h[2:2 + n]), dtype=_DTYPES[int(h[0])], device=device)


def _wait(works) -> None:
    for w in works:
        w.wait()
