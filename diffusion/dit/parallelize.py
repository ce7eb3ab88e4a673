"""The parallel plan of VideoDiT, declared beside the model: FSDP2 over data-parallel ranks, context
parallelism over a CP group.

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


def parallelize_dit(model: VideoDiT, dp_mesh=None, cp=None, *, cp_mode: str = "ulysses",
                    reshard_after_forward: bool = True, mp_policy=None,
                    gradient_divide_factor: float | None = 1.0,
                    activation_checkpointing: bool | None = None, cpu_offload: bool = False) -> VideoDiT:
    """Apply the plan in place and return the model.

    dp_mesh: a 1-D DeviceMesh or ProcessGroup over the ranks that shard the weights (dp x cp), or a
    `parallel.layout.BuiltLayout` (its ("dp", "cp") group shards the weights and, unless `cp` is given,
    its cp group in `cp_mode` shards the sequence), or None.
    cp: a `parallel.attention.ContextParallel` (or None). mp_policy: FSDP2 MixedPrecisionPolicy (bf16
    on GPU). gradient_divide_factor: 1.0 sums gradients (see module doc); None keeps FSDP's mean.
    cpu_offload: FSDP2 keeps the sharded parameters, gradients and optimizer state in CPU memory.
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
