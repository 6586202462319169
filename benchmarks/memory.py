"""What a stage's memory must hold, by arithmetic, to set beside its measured peak RSS.

Training keeps, for the backward pass, each decoder layer's activations: per token of a
Llama-style layer (hidden h, MLP width i, float32) the MLP's gate, up, activation and
product (4i) and the attention's q, k, v and output, the norms' inputs and outputs and the
projections' inputs (8h): (4i + 8h) x 4 bytes. The attention mask adds seqs x T^2 per layer.
`saved_tensor_bytes` counts what autograd really keeps, to check the formula in the same run.
"""

from __future__ import annotations

import subprocess
import sys

import torch

GIB = 2**30


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def optimizer_bytes(trainable: int) -> int:
    """AdamW on float32 trainable parameters: the gradient and two moments, 12 bytes each."""
    return 12 * trainable


def lora_parameters(config, rank: int, targets: dict[str, tuple[int, int]]) -> int:
    """LoRA A and B of each targeted linear layer (in, out), in every decoder layer."""
    return config.num_hidden_layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in targets.values())


def llama_linears(config) -> dict[str, tuple[int, int]]:
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def activation_bytes(config, sequences: int, width: int, *, bytes_per_value: int = 4) -> int:
    """Activations kept for the backward pass of one forward over `sequences` x `width` tokens."""
    per_token_layer = 4 * config.intermediate_size + 8 * config.hidden_size
    tokens = sequences * width
    decoder = tokens * config.num_hidden_layers * per_token_layer * bytes_per_value
    mask = config.num_hidden_layers * sequences * width * width * bytes_per_value
    return decoder + mask


def saved_tensor_bytes(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """What autograd keeps for the backward pass of one forward (each storage once),
    minus the parameters themselves (counted as weights)."""
    storages: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return sum(storages.values())


def runtime_bytes(modules: list[str]) -> int:
    """Peak RSS of a fresh Python that imports `modules` and loads nothing: the libraries'
    own share of every stage's peak."""
    code = ";".join([*(f"import {m}" for m in modules), "import resource",
                     "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) * 1024

