"""Run by test_distributed.py under torchrun with 2 CPU processes: our GPT under PyTorch's FSDP2
(`fully_shard`) over gloo, checked against the same model unsharded in each process.

Accelerate enables FSDP only on GPUs, so this drives FSDP2 directly, as Accelerate's FSDP2 path
does (each Block its own group, the root holding the tied embedding/head): the fused head's
gradients, an optimizer step, a sharded checkpoint (torch.distributed.checkpoint) that resumes
exactly, and gathered full weights that gpt_core loads alone; in fp32, and under a bf16
MixedPrecisionPolicy. Writes rank<N>.json ({"fp32": ..., "bf16": ...}) into argv[1].
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from gpt_core import GPT, get_preset, load_pretrained, save_state_dict


def shard(model: GPT, mesh, policy: MixedPrecisionPolicy) -> GPT:
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    return fully_shard(model, mesh=mesh, mp_policy=policy)


def batch(step: int, rank: int):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randint(0, 50257, (2, 16), generator=g)
    return x, torch.roll(x, -1, dims=1)


def step(model, optimizer, x, y) -> float:
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def probe(reference: GPT, config, policy: MixedPrecisionPolicy, out: Path, name: str) -> dict:
    """`reference` (unsharded, fp32, its gradients of step 0 computed) against a sharded copy under `policy`."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = copy.deepcopy(reference)
    model.zero_grad(set_to_none=True)
    model = shard(model, init_device_mesh("cpu", (world,)), policy)
    result = {
        "tied": model.head.weight is model.embed.weight,
        "sharded_rows": model.embed.weight.to_local().shape[0],
        "rows": config.vocab_size,
    }

    # One step: each rank its own batch; the reference averaged the two ranks' losses itself.
    x, y = batch(0, rank)
    _, loss = model(x, y)
    loss.backward()
    result["loss_diff"] = abs(dist_mean(loss.detach()) - reference.step0_loss) / reference.step0_loss
    result["grad_max_diff"] = max(
        ((p.grad.full_tensor() - q.grad).abs().max() / q.grad.abs().max()).item()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    )
    # Sharded checkpoint after one optimizer step, then two more steps; a fresh sharded model
    # loaded from the checkpoint must repeat those two steps exactly.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()
    optimizer.zero_grad()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(out / f"sharded-{name}"))
    result["continued"] = [step(model, optimizer, *batch(s, rank)) for s in (1, 2)]

    torch.manual_seed(1)  # different initial weights: everything must come from the checkpoint
    restored = shard(GPT(config), init_device_mesh("cpu", (world,)), policy)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    model_state, optim_state = get_state_dict(restored, restored_optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(out / f"sharded-{name}"))
    set_state_dict(restored, restored_optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    result["resumed"] = [step(restored, restored_optimizer, *batch(s, rank)) for s in (1, 2)]

    # Gathered full weights (what checkpoints/best holds), loadable by gpt_core alone.
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        save_state_dict(full, config, out / f"best-{name}")
        plain = load_pretrained(out / f"best-{name}")
        result["best_matches"] = all(torch.equal(plain.state_dict()[k], v) for k, v in full.items())
    dist.barrier()  # rank 0 still writes and reloads the full weights
    return result


def dist_mean(t: torch.Tensor) -> float:
    t = t.float().clone()
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = get_preset("tiny").replace(dropout=0.0)
    reference = GPT(config)
    reference_loss = sum(reference(*batch(0, r))[1] for r in range(world)) / world
    reference_loss.backward()
    reference.step0_loss = reference_loss.item()
    policies = {
        "fp32": MixedPrecisionPolicy(),
        # bf16 compute, fp32 gradient reduction and master weights: what fsdp2.yaml's bf16 asks for
        "bf16": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
    }
    result = {name: probe(reference, config, policy, out, name) for name, policy in policies.items()}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()  # tear down together
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
