"""The parallel plan of VideoDiT, declared beside the model: tensor parallelism over a TP group, context
parallelism over a CP group, FSDP2 over data-parallel (and CP) ranks. Training and generation use this
plan and no other.

- Tensor parallel (DTensor, on the "tp" dim of a (dp x cp, tp) DeviceMesh): in every block the Q, K, V
  projections of both attentions and the MLP's first layer are column-parallel (each rank computes its
  heads / its slice of the hidden layer), the output projections and the MLP's second layer row-parallel
  (their outputs summed over the group). Wan's RMSNorm of Q and K runs across all heads: each rank holds
  the norm weight of its heads and sums its squares over the group (HeadsRMSNorm). Everything else (the
  residual stream, modulation, embeddings, head) is replicated over TP: each TP rank computes it whole,
  so its gradient is already whole on every TP rank. Sequence-parallel norms are not used: context
  parallelism already shards the sequence, and the replicated residual costs little beside attention.

- Context parallel: the token sequence is sharded inside `VideoDiT.forward` (see model.py); attention
  goes through `parallel.attention.cp_attention`; text tokens, timestep and modulation are replicated.
- FSDP2 (`torch.distributed.fsdp.fully_shard`): one unit per transformer block plus the root (patch and
  condition embeddings, head). Shard over every rank that holds a partial gradient of the same
  replica, i.e. the flattened dp x cp group: CP ranks own partial gradients that must be summed.
- Gradient reduction is a SUM by default (divide factor 1): the objective's convention
  (diffusion/objective.py) scales each rank's loss to its share of the global batch, so summing
  gives the single-process gradient exactly.
"""

from __future__ import annotations

from diffusion.dit.model import VideoDiT


def _as_mesh(mesh_or_group):
    from torch.distributed.device_mesh import DeviceMesh

    if mesh_or_group is None or isinstance(mesh_or_group, DeviceMesh):
        return mesh_or_group
    from parallel.device import rank_device

    device = rank_device().device.type
    return DeviceMesh.from_group(mesh_or_group, device_type=device)


# module inside each block -> its tensor-parallel style
_COLUMN = ("self_attn.q", "self_attn.k", "self_attn.v", "cross_attn.q", "cross_attn.k", "cross_attn.v", "mlp.fc1")
_ROW = ("self_attn.out", "cross_attn.out", "mlp.fc2")
_HEAD_NORMS = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k")


def apply_tensor_parallel(model: VideoDiT, tp_mesh) -> VideoDiT:
    """Split every block's heads and MLP over `tp_mesh` (1-D); works on a model still on the meta device."""
    from torch import nn
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    c = model.config
    tp = tp_mesh.size()
    if c.num_heads % tp or c.ffn_dim % tp:
        raise ValueError(f"tensor parallel degree {tp} must divide num_heads {c.num_heads} and ffn_dim {c.ffn_dim}")
    plan = {name: ColwiseParallel() for name in _COLUMN} | {name: RowwiseParallel() for name in _ROW}
    for block in model.blocks:
        parallelize_module(block, tp_mesh, plan)
        for name in _HEAD_NORMS:
            norm = block.get_submodule(name)
            norm.weight = nn.Parameter(distribute_tensor(norm.weight.data, tp_mesh, [Shard(0)]))
            norm.tp_group = tp_mesh.get_group()
    return model


def parallelize_dit(model: VideoDiT, dp_mesh=None, cp=None, *, cp_mode: str = "ulysses",
                    reshard_after_forward: bool = True, mp_policy=None,
                    gradient_divide_factor: float | None = 1.0,
                    activation_checkpointing: bool | None = None, cpu_offload: bool = False,
                    tp_mesh=None) -> VideoDiT:
    """Apply the plan in place and return the model.

    dp_mesh: a 1-D DeviceMesh or ProcessGroup over the ranks that shard the weights (dp x cp), or a
    `parallel.layout.BuiltLayout` (its ("dp", "cp") group shards the weights and, unless `cp` is given,
    its cp group in `cp_mode` shards the sequence), or None.
    cp: a `parallel.attention.ContextParallel` (or None). mp_policy: FSDP2 MixedPrecisionPolicy (bf16
    on GPU). gradient_divide_factor: 1.0 sums gradients (see module doc); None keeps FSDP's mean.
    cpu_offload: FSDP2 keeps the sharded parameters, gradients and optimizer state in CPU memory.
    tp_mesh: the "tp" dim of the same DeviceMesh as dp_mesh (tensor parallelism; None: none).
    The model may still be on the meta device: sharding comes first, `to_empty` and the weights after
    (diffusion.dit.weights), so no rank ever holds the whole model.
    """
    from parallel.layout import BuiltLayout

    if isinstance(dp_mesh, BuiltLayout):
        layout = dp_mesh
        if cp is None:
            cp = layout.context_parallel(cp_mode)
        dp_mesh = layout.group(("dp", "cp")) if layout.size_of(("dp", "cp")) > 1 else None
    model.set_context_parallel(cp)
    if activation_checkpointing is not None:
        model.enable_activation_checkpointing(activation_checkpointing)
    if tp_mesh is not None and tp_mesh.size() > 1:
        apply_tensor_parallel(model, tp_mesh)
    mesh = _as_mesh(dp_mesh)
    if mesh is None:
        return model
    from torch.distributed.fsdp import FSDPModule, fully_shard

    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    if cpu_offload:
        from torch.distributed.fsdp import CPUOffloadPolicy

        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    if gradient_divide_factor is not None:
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(gradient_divide_factor)
                if gradient_divide_factor == 1.0:
                    # plain SUM collectives: gloo has no PREMUL_SUM, and a factor of 1 needs no scaling
                    module.set_force_sum_reduction_for_comms(True)
    return model
