"""Kernel-per-operator baselines: a gpt-fast-style model, and Hugging Face transformers itself.

Both are *runners*: callables ``runner(config, num_tokens, context_len) -> step`` with the same
signature as the megakernel hook in ``bench.run``. ``step()`` runs one decode step of
``num_tokens`` sequences, one new token each, every sequence holding ``context_len`` cached
tokens, and returns the logits ``[num_tokens, 1, vocab]``. A step may carry a ``reset()``
method; the timing loop calls it outside the timed region (it restores cache positions).

- ``TorchCompileRunner``: ``Transformer`` below (plain PyTorch, reads like the equations,
  static KV cache ``[B, n_kv, max_ctx, head_dim]``) wrapped in
  ``torch.compile(mode="reduce-overhead")``, i.e. Inductor kernels replayed from CUDA graphs.
- ``HFRunner``: ``AutoModelForCausalLM.from_config`` with a ``StaticCache`` and
  ``model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)``, as
  the transformers documentation tells users to run it.

With ``compile=False`` both run eagerly, on a CPU too; the CPU tests use that to check that
``Transformer`` loaded from a transformers state dict gives transformers' logits.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from eventkernel.models.config import ModelConfig
from eventkernel.models.decoder import graph_weight_parts, rope_inv_freq

# NOTE: the old name of the shape struct; the baseline reads everything from ModelConfig.
ModelShape = ModelConfig

# Transformer parameter -> the graph weight it holds; models.decoder.graph_weight_parts gives
# the checkpoint tensors of each (the family's table), fused in the same order.
PARAM_WEIGHTS = {
    "tok_embeddings.weight": "embed",
    "norm.weight": "final_norm",
    "output.weight": "lm_head",
    "layers.{i}.attention_norm.weight": "layers.{i}.attn_norm",
    "layers.{i}.attention.wqkv.weight": "layers.{i}.qkv",
    "layers.{i}.attention.q_norm.weight": "layers.{i}.q_norm",
    "layers.{i}.attention.k_norm.weight": "layers.{i}.k_norm",
    "layers.{i}.attention.wo.weight": "layers.{i}.o_proj",
    "layers.{i}.ffn_norm.weight": "layers.{i}.mlp_norm",
    "layers.{i}.feed_forward.w13.weight": "layers.{i}.gate_up",
    "layers.{i}.feed_forward.w2.weight": "layers.{i}.down",
}

# NOTE: every (batch size, context) pair is its own compiled graph; torch's default limit of
# 8 recompiles per code object would silently fall back to eager in a sweep.
RECOMPILE_LIMIT = 64
INIT_STD = 0.02  # the Hugging Face initializer_range: activations stay O(1) through the layers


def as_model_config(config: ModelConfig | Any) -> ModelConfig:
    """``config`` itself, or the ModelConfig of a Hugging Face config dict / object / path."""
    return config if isinstance(config, ModelConfig) else ModelConfig.from_hf(config)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, shape: ModelConfig) -> None:
        super().__init__()
        self.shape = shape
        self.wqkv = nn.Linear(shape.hidden_size, shape.q_size + 2 * shape.kv_size, bias=False)
        self.wo = nn.Linear(shape.q_size, shape.hidden_size, bias=False)
        self.q_norm = RMSNorm(shape.head_dim, shape.rms_norm_eps) if shape.qk_norm else None
        self.k_norm = RMSNorm(shape.head_dim, shape.rms_norm_eps) if shape.qk_norm else None
        self.register_buffer("k_cache", None, persistent=False)  # [max_B, n_kv, T, hd]
        self.register_buffer("v_cache", None, persistent=False)

    def forward(self, x, cos, sin, input_pos, mask):
        # x: [B, S, D]; cos, sin: [B, S, hd]; input_pos: [B, S]; mask: [B, S, T] (True = attend)
        # over the first T cache slots (T <= the cache's length)
        s = self.shape
        batch, seq, _ = x.shape
        group = s.num_heads // s.num_kv_heads
        q, k, v = self.wqkv(x).split([s.q_size, s.kv_size, s.kv_size], dim=-1)
        q = q.view(batch, seq, s.num_heads, s.head_dim)
        k = k.view(batch, seq, s.num_kv_heads, s.head_dim)
        v = v.view(batch, seq, s.num_kv_heads, s.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin

        batch_idx = torch.arange(batch, device=x.device).unsqueeze(1).expand(batch, seq)
        self.k_cache[batch_idx, :, input_pos] = k  # k_cache: [max_B, n_kv, T, hd]
        self.v_cache[batch_idx, :, input_pos] = v
        window = mask.shape[-1]
        keys, values = self.k_cache[:batch, :, :window], self.v_cache[:batch, :, :window]

        # GQA without copying the cache: fold each KV head's query group into the query length.
        # q: [B, S, n_kv * group, hd] -> [B, n_kv, group * S, hd]
        q = q.view(batch, seq, s.num_kv_heads, group, s.head_dim).permute(0, 2, 3, 1, 4)
        q = q.reshape(batch, s.num_kv_heads, group * seq, s.head_dim)
        if seq == 1:
            mask = mask.unsqueeze(1)  # [B, 1, 1, T], broadcast over the group
        else:
            mask = mask.unsqueeze(1).unsqueeze(1).expand(-1, -1, group, -1, -1)
            mask = mask.reshape(batch, 1, group * seq, -1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        y = y.view(batch, s.num_kv_heads, group, seq, s.head_dim).permute(0, 3, 1, 2, 4)
        return self.wo(y.reshape(batch, seq, s.q_size))


class FeedForward(nn.Module):
    def __init__(self, shape: ModelConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(shape.hidden_size, 2 * shape.intermediate_size, bias=False)
        self.w2 = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, shape: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.attention = Attention(shape)
        self.ffn_norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.feed_forward = FeedForward(shape)

    def forward(self, x, cos, sin, input_pos, mask):
        h = x + self.attention(self.attention_norm(x), cos, sin, input_pos, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """A dense Llama/Qwen3 decoder with a static KV cache, in plain PyTorch.

    Build with ``Transformer.random`` or ``Transformer.from_hf_model``, then call
    ``setup_caches(max_batch, max_ctx)`` before ``forward``.
    """

    def __init__(self, shape: ModelConfig) -> None:
        super().__init__()
        self.shape = shape
        self.tok_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.output = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("rope_cos", None, persistent=False)  # [T, hd] float32
        self.register_buffer("rope_sin", None, persistent=False)

    @classmethod
    def random(cls, config: ModelConfig | Any, device, dtype=torch.bfloat16,
               seed: int = 0) -> Transformer:
        """A model with seeded random weights (normal, std 0.02; norms 1) built on ``device``.

        ``config``: a ModelConfig, or anything ``ModelConfig.from_hf`` reads.
        """
        with torch.device("meta"):
            model = cls(as_model_config(config)).to(dtype)
        model = model.to_empty(device=device)._tie_weights()
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, INIT_STD, generator=generator)
        return model.eval().requires_grad_(False)

    @classmethod
    def from_hf_model(cls, hf_model: nn.Module) -> Transformer:
        """Same weights as a transformers ``LlamaForCausalLM``/``Qwen3ForCausalLM`` (copied)."""
        param = next(hf_model.parameters())
        with torch.device("meta"):
            model = cls(ModelConfig.from_hf(hf_model.config)).to(param.dtype)
        model = model.to_empty(device=param.device)._tie_weights()
        model.load_hf_state_dict(hf_model.state_dict())
        return model.eval().requires_grad_(False)

    def _tie_weights(self) -> Transformer:
        # NOTE: Module.to_empty allocates per module, which unties shared parameters.
        if self.shape.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        return self

    @torch.no_grad()
    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy weights named as in transformers, fusing q/k/v and gate/up projections as the
        family's checkpoint table says."""
        parts = graph_weight_parts(self.shape)
        for i in range(self.shape.num_layers):
            for param, graph in PARAM_WEIGHTS.items():
                if "{i}" not in param and i > 0:
                    continue
                name = graph.format(i=i)
                if name not in parts:
                    continue          # lm_head when tied, q/k norms without qk_norm
                target = self.get_parameter(param.format(i=i))
                target.copy_(torch.cat([state_dict[p] for p in parts[name]]))

    def setup_caches(self, max_batch: int, max_ctx: int) -> None:
        """Allocate zeroed KV caches ``[max_batch, n_kv, max_ctx, hd]`` and RoPE tables."""
        s = self.shape
        weight = self.output.weight
        cache_shape = (max_batch, s.num_kv_heads, max_ctx, s.head_dim)
        for block in self.layers:
            attn = block.attention
            attn.k_cache = attn.v_cache = None  # free the old cache before allocating
            attn.k_cache = torch.zeros(cache_shape, device=weight.device, dtype=weight.dtype)
            attn.v_cache = torch.zeros(cache_shape, device=weight.device, dtype=weight.dtype)
            # Fixed addresses: CUDA graphs replay in-place cache writes instead of copying.
            torch._dynamo.mark_static_address(attn.k_cache)
            torch._dynamo.mark_static_address(attn.v_cache)
        positions = torch.arange(max_ctx, dtype=torch.float, device=weight.device)
        freqs = positions[:, None] * rope_inv_freq(s).to(weight.device)[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)  # [T, hd], float32 like transformers
        self.rope_cos, self.rope_sin = angles.cos(), angles.sin()
        torch._dynamo.mark_static_address(self.rope_cos)
        torch._dynamo.mark_static_address(self.rope_sin)

    @property
    def max_batch(self) -> int:
        cache = self.layers[0].attention.k_cache
        return 0 if cache is None else cache.shape[0]

    @property
    def max_ctx(self) -> int:
        return 0 if self.rope_cos is None else self.rope_cos.shape[0]

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor,
                slots: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, S, vocab]`` for ``tokens [B, S]`` at positions ``input_pos [B, S]``.

        Writes the new keys/values at ``input_pos``; each token attends to cache slots at
        positions ``<=`` its own, so sequences of different lengths share one batch.
        ``slots``: ``arange(T)``, attention reads only the first T slots of the cache (all
        of them when None). Its length is a tensor dim, so under torch.compile one graph
        with a symbolic T serves every context length without reallocating the cache.
        """
        if self.rope_cos is None:
            raise RuntimeError("call Transformer.setup_caches(max_batch, max_ctx) before forward")
        x = self.tok_embeddings(tokens)  # [B, S, D]
        cos = self.rope_cos[input_pos].to(x.dtype)  # [B, S, hd]
        sin = self.rope_sin[input_pos].to(x.dtype)
        if slots is None:
            slots = torch.arange(self.max_ctx, device=tokens.device)
        mask = slots[None, None, :] <= input_pos[:, :, None]  # [B, S, T]
        for block in self.layers:
            x = block(x, cos, sin, input_pos, mask)
        return self.output(self.norm(x))


class DecodeStep:
    """A zero-argument decode step over fixed inputs; ``reset()`` runs before timed calls.

    Calls run under ``torch.no_grad()``: an inference graph, and CUDA-graph trees then start a
    new generation at every call instead of waiting for a backward pass.
    """

    def __init__(self, fn: Callable, *args: Any, reset: Callable[[], None] | None = None,
                 **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.reset = reset or (lambda: None)

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return self.fn(*self.args, **self.kwargs)


def cache_length(context_len: int, room: int = 1) -> int:
    """Cache slots attention reads for ``context_len`` cached tokens plus ``room`` new ones.

    Rounded up to 16 (alignment for the attention kernels); kept tight so the baselines are
    not charged for slots they never use.
    """
    return -(-(context_len + room) // 16) * 16


def decode_inputs(shape: ModelConfig, num_tokens: int, context_len: int, device, seed: int):
    """Seeded token ids ``[B, 1]`` and positions ``[B, 1]`` (all ``context_len``) on device."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(shape.vocab_size, (num_tokens, 1), generator=generator)
    positions = torch.full((num_tokens, 1), context_len, dtype=torch.long)
    return tokens.to(device), positions.to(device)


def _compile(fn: Callable, dynamic: bool | None, backend: str) -> Callable:
    """``torch.compile(fn, mode="reduce-overhead", fullgraph=True)`` (Inductor kernels in
    CUDA graphs); another ``backend`` (tests: "eager") takes no mode."""
    _raise_recompile_limit()
    if backend == "inductor":
        return torch.compile(fn, mode="reduce-overhead", fullgraph=True, dynamic=dynamic)
    return torch.compile(fn, backend=backend, fullgraph=True, dynamic=dynamic)


def _mark_dynamic(*dims: tuple[torch.Tensor, int]) -> None:
    """Compile these (tensor, dim) sizes symbolic from their first graph on.

    torch.compile's default (``dynamic=None``) compiles a static graph first and a symbolic
    one when a size changes; the bench's shapes (batch 1 or more, two contexts) would cost
    4 compiles per model. Marked from the first batch above 1 on, they cost 3: batch 1
    (which torch always specializes) at the first context, static, then symbolic in the
    context, and one graph for every other batch and context. ``dynamic=True`` gives 2,
    but makes every size symbolic: 2.5x the compile time and up to 2x slower steps (H200,
    llama-3.1-8b).
    """
    for tensor, dim in dims:
        torch._dynamo.mark_dynamic(tensor, dim)


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))


class TorchCompileRunner:
    """Runner for the gpt-fast-style baseline; keeps weights and the compiled model across calls.

    ``max_batch`` and ``max_context`` size the shared KV cache so every (batch, context)
    point reuses the same buffers (the CUDA graphs of earlier points keep pointing at live
    memory); a step reads only the cache slots its context needs. ``dynamic`` is
    torch.compile's: True compiles batch and context symbolic (two graphs: batch 1, which
    torch specializes, and any other batch); None (its default) compiles the first shape
    static and recompiles with a dim symbolic when it changes; False compiles every
    (batch, context) shape static (gpt-fast style, ~20-40 s per shape for an 8B model).
    Each shape gets its own CUDA graph.
    """

    name = "torch-compile"

    def __init__(self, device, *, dtype=torch.bfloat16, compile: bool = True, max_batch: int = 1,
                 max_context: int = 0, seed: int = 0, weights_from: nn.Module | None = None,
                 dynamic: bool | None = None, backend: str = "inductor") -> None:
        self.device, self.dtype, self.compile = torch.device(device), dtype, compile
        self.dynamic, self.backend = dynamic, backend
        self.max_batch, self.max_context = max_batch, max_context
        self.seed, self.weights_from = seed, weights_from
        self.model: Transformer | None = None
        self._forward: Callable | None = None

    def __call__(self, config: ModelConfig | Any, num_tokens: int,
                 context_len: int) -> DecodeStep:
        shape = as_model_config(config)
        if self.model is None or self.model.shape != shape:
            self._build(config)
        window = cache_length(context_len)
        # NOTE: one spare row and 16 spare slots: a slice as long as the whole buffer would
        # be a special case to torch.compile (a recompile, or an error for a dynamic dim).
        if self.model.max_ctx <= window or self.model.max_batch <= num_tokens:
            self.max_batch = max(self.max_batch, num_tokens)
            self.max_context = max(self.max_context, context_len)
            self.model.setup_caches(self.max_batch + 1, cache_length(self.max_context) + 16)
        tokens, positions = decode_inputs(shape, num_tokens, context_len, self.device, self.seed)
        slots = torch.arange(window, device=self.device)
        if self.compile and self.dynamic is None and num_tokens > 1:
            # NOTE: not at batch 1: its first graph stays static (a symbolic context cost
            # 6 % of a llama-3.2-1b batch-1 step on an H200: 1.276 vs 1.201 ms).
            _mark_dynamic((slots, 0), (tokens, 0), (positions, 0))
        return DecodeStep(self._forward, tokens, positions, slots)

    def _build(self, config: Any) -> None:
        self.close()
        if self.weights_from is not None:
            self.model = Transformer.from_hf_model(self.weights_from)
        else:
            self.model = Transformer.random(config, self.device, self.dtype, self.seed)
        self._forward = self.model
        if self.compile:
            self._forward = _compile(self.model, self.dynamic, self.backend)

    def close(self) -> None:
        """Drop the model and compiled graphs so the next system gets the memory."""
        self.model = self._forward = None
        if self.compile:
            torch._dynamo.reset()


def build_hf_model(config: Any, device, dtype=torch.bfloat16, seed: int = 0) -> nn.Module:
    """``AutoModelForCausalLM.from_config`` with seeded random weights, built on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, dict):
        fields = {k: v for k, v in config.items() if k not in ("model_type", "torch_dtype")}
        config = AutoConfig.for_model(config["model_type"], **fields)
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval().requires_grad_(False)


class HFRunner:
    """Runner for transformers with a ``StaticCache`` and a compiled ``forward``."""

    name = "hf"

    def __init__(self, device, *, dtype=torch.bfloat16, compile: bool = True, seed: int = 0,
                 model: nn.Module | None = None, dynamic: bool | None = None,
                 backend: str = "inductor") -> None:
        self.device, self.dtype, self.dynamic = torch.device(device), dtype, dynamic
        self.backend = backend
        self.compile, self.seed = compile, seed
        self.model = model
        self._shape = None if model is None else ModelConfig.from_hf(model.config)
        self._forward: Callable | None = None if model is None else self._wrap(model)

    def __call__(self, config: ModelConfig | Any, num_tokens: int,
                 context_len: int) -> DecodeStep:
        from transformers import StaticCache

        shape = as_model_config(config)
        if isinstance(config, ModelConfig):
            config = config.to_hf()
        if self.model is None or self._shape != shape:
            self.close()
            self.model = build_hf_model(config, self.device, self.dtype, self.seed)
            self._shape, self._forward = shape, self._wrap(self.model)
        max_len = cache_length(context_len)
        cache = StaticCache(config=self.model.config, max_cache_len=max_len)
        # NOTE: allocate before the first compiled call: a lazily allocated cache is created
        # under tracing, is not marked as a static address, and CUDA graphs would be skipped.
        cache.early_initialization(num_tokens, shape.num_kv_heads, shape.head_dim,
                                   self.dtype, self.device)
        tokens, positions = decode_inputs(shape, num_tokens, context_len, self.device, self.seed)
        if self.compile and self.dynamic is None and num_tokens > 1:
            # NOTE: not the cache length: transformers specializes it (the cache's
            # max_cache_len is a Python int), so batch-1 steps compile once per context.
            dims = [(t, 0) for layer in cache.layers for t in (layer.keys, layer.values)]
            _mark_dynamic(*dims, (tokens, 0), (positions, 0))
        cache_kwarg = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"
        return _HFStep(self._forward, cache, cache_kwarg, tokens, positions, context_len, max_len)

    def _wrap(self, model: nn.Module) -> Callable:
        if not self.compile:
            return model.forward
        return _compile(model.forward, self.dynamic, self.backend)

    def close(self) -> None:
        self.model = self._forward = self._shape = None
        if self.compile:
            torch._dynamo.reset()


class _HFStep(DecodeStep):
    """A transformers decode step; keeps the StaticCache write position inside the cache.

    transformers' ``StaticCache`` advances a per-layer ``cumulative_length`` on every call;
    ``reset()`` puts it back at ``context_len`` (outside timed regions), and the step resets
    by itself before it would write past the end.
    """

    def __init__(self, forward, cache, cache_kwarg, tokens, positions, context_len, max_len):
        super().__init__(forward, input_ids=tokens, position_ids=positions, use_cache=True,
                         reset=self._reset_position, **{cache_kwarg: cache})
        self.cache, self.context_len, self.room = cache, context_len, max_len - context_len
        self._calls_since_reset = 0
        self._reset_position()

    def _reset_position(self) -> None:
        for layer in self.cache.layers:
            if not hasattr(layer, "cumulative_length"):
                raise RuntimeError(
                    "transformers' StaticCache layers no longer have `cumulative_length`; "
                    "update eventkernel.bench.baseline._HFStep for this transformers version"
                )
            layer.cumulative_length.fill_(self.context_len)
        self._calls_since_reset = 0

    def __call__(self) -> torch.Tensor:
        if self._calls_since_reset >= self.room:
            self._reset_position()
        self._calls_since_reset += 1
        return super().__call__().logits
