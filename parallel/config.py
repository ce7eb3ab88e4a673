"""The `parallel` section of an experiment: every degree and mode of a job in one place, checked once
before any rank starts.

    dp x cp x tp ranks run the backbone (tp fastest, then cp, then dp: Megatron's order);
    encoders = replicated   every backbone rank runs its own encoders on its own batch;
               colocated    the encoders run data-parallel over all backbone ranks, each encoding a share
                            of the global batch, and a boundary gives each backbone slot its inputs;
               disjoint     `encoder_ranks` more ranks (after the backbone's) run the encoders and stream
                            their outputs to the backbone through point-to-point boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CP_MODES = ("ulysses", "ring", "usp")
ENCODERS = ("replicated", "colocated", "disjoint")


class ParallelConfigError(ValueError):
    """A layout that cannot run (one line, naming the degrees)."""


@dataclass
class ParallelConfig:
    dp: int = 0              # 0: whatever the ranks leave after cp, tp and the encoder ranks
    cp: int = 1
    tp: int = 1
    cp_mode: str = "ulysses"  # ulysses | ring | usp (Ulysses inside groups of cp_ulysses, ring across them)
    cp_ulysses: int = 2       # usp only
    encoders: str = "replicated"
    encoder_ranks: int = 0    # disjoint only

    def __post_init__(self) -> None:
        for name in ("cp", "tp", "cp_ulysses"):
            if getattr(self, name) < 1:
                raise ParallelConfigError(f"parallel.{name} must be >= 1, got {getattr(self, name)}")
        if self.dp < 0 or self.encoder_ranks < 0:
            raise ParallelConfigError("parallel.dp and parallel.encoder_ranks must be >= 0")
        if self.cp_mode not in CP_MODES:
            raise ParallelConfigError(f"parallel.cp_mode must be one of {', '.join(CP_MODES)}, got {self.cp_mode!r}")
        if self.encoders not in ENCODERS:
            raise ParallelConfigError(f"parallel.encoders must be one of {', '.join(ENCODERS)}, got {self.encoders!r}")
        if self.encoders == "disjoint" and self.encoder_ranks < 1:
            raise ParallelConfigError("parallel.encoders=disjoint needs --encoder-ranks >= 1")
        if self.encoders != "disjoint" and self.encoder_ranks:
            raise ParallelConfigError(f"--encoder-ranks {self.encoder_ranks} needs parallel.encoders=disjoint")
        if self.cp_mode == "usp" and self.cp > 1 and self.cp % self.cp_ulysses:
            raise ParallelConfigError(f"usp: parallel.cp_ulysses {self.cp_ulysses} must divide cp {self.cp}")

    @property
    def backbone_ranks(self) -> int:
        return self.dp * self.cp * self.tp

    @property
    def world(self) -> int:
        return self.backbone_ranks + self.encoder_ranks

    def resolve(self, nproc: int) -> ParallelConfig:
        """The layout for `nproc` ranks, dp filled in; ParallelConfigError when they do not add up."""
        per = self.cp * self.tp
        dp = self.dp
        if dp == 0:
            if (nproc - self.encoder_ranks) % per or nproc <= self.encoder_ranks:
                raise ParallelConfigError(
                    f"--nproc {nproc} minus {self.encoder_ranks} encoder rank(s) is not a multiple of cp x tp = "
                    f"{self.cp} x {self.tp}")
            dp = (nproc - self.encoder_ranks) // per
        out = replace(self, dp=dp)
        if out.world != nproc:
            raise ParallelConfigError(
                f"--nproc {nproc} must equal dp x cp x tp + encoder ranks = {dp} x {self.cp} x {self.tp} + "
                f"{self.encoder_ranks} = {out.world}")
        if self.encoders == "disjoint":
            big, small = max(dp, self.encoder_ranks), min(dp, self.encoder_ranks)
            if big % small:
                raise ParallelConfigError(f"disjoint encoders: {self.encoder_ranks} encoder rank(s) and dp {dp} must "
                                          "divide one another")
        return out

    def check_model(self, num_heads: int, ffn_dim: int) -> None:
        """Degrees the model's shapes allow (tp splits heads and the MLP; Ulysses splits each TP rank's heads)."""
        if num_heads % self.tp or ffn_dim % self.tp:
            raise ParallelConfigError(f"tp {self.tp} must divide the model's num_heads ({num_heads}) and ffn_dim "
                                      f"({ffn_dim})")
        local_heads = num_heads // self.tp
        uly = {"ulysses": self.cp, "usp": self.cp_ulysses, "ring": 1}[self.cp_mode]
        if self.cp > 1 and local_heads % uly:
            raise ParallelConfigError(f"{self.cp_mode} context parallel needs the heads per TP rank ({local_heads}) "
                                      f"divisible by {uly}; use --set parallel.cp_mode=ring")


__all__ = ["CP_MODES", "ENCODERS", "ParallelConfig", "ParallelConfigError"]
