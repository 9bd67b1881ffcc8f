"""A tiny CPU "model runner" for model files imported against the stand-ins.

It plays the part of SGLang's ModelRunner + attention backend for one
tensor-parallel rank: a paged KV cache (``req_to_token`` + per-layer k/v
buffers indexed by ``out_cache_loc``), ``ForwardBatch`` construction for
extend (prefill, possibly on top of a cached prefix) and decode batches, and
causal attention over each request's cached tokens.

Use it only inside ``standin_sglang.install()``: the ``sglang.*`` names are
imported lazily from the installed stand-ins.
"""

from typing import Dict, List, Sequence

import torch


class CPUAttentionBackend:
    """Causal attention of each request's new tokens over all of its tokens."""

    def __init__(self, runner: "CPUModelRunner"):
        self.runner = runner

    def forward(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        pool = self.runner
        if save_kv_cache:
            pool.k_buffer[layer.layer_id][forward_batch.out_cache_loc] = k
            pool.v_buffer[layer.layer_id][forward_batch.out_cache_loc] = v
        q = q.view(-1, layer.tp_q_head_num, layer.qk_head_dim)
        if forward_batch.forward_mode.is_extend():
            q_lens = forward_batch.extend_seq_lens_cpu
        else:
            q_lens = [1] * forward_batch.batch_size
        outputs, start = [], 0
        for req, seq_len, q_len in zip(
            forward_batch.req_pool_indices.tolist(),
            forward_batch.seq_lens.tolist(),
            q_lens,
        ):
            locs = pool.req_to_token[req, :seq_len]
            keys = pool.k_buffer[layer.layer_id][locs]
            values = pool.v_buffer[layer.layer_id][locs]
            q_i = q[start : start + q_len]
            start += q_len
            scores = torch.einsum("qhd,khd->hqk", q_i, keys) * layer.scaling
            q_pos = torch.arange(seq_len - q_len, seq_len).unsqueeze(1)
            future = torch.arange(seq_len).unsqueeze(0) > q_pos
            scores = scores.masked_fill(future, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(values.dtype)
            outputs.append(torch.einsum("hqk,khd->qhd", probs, values))
        out = torch.cat(outputs, dim=0)
        return out.reshape(out.shape[0], layer.tp_q_head_num * layer.v_head_dim)


class CPUModelRunner:
    """Runs a model's ``forward(input_ids, positions, forward_batch, **kwargs)``."""

    def __init__(self, model: torch.nn.Module, max_tokens: int = 512, max_reqs=8):
        from sglang.srt.layers.radix_attention import RadixAttention

        attns = [m for m in model.modules() if isinstance(m, RadixAttention)]
        assert attns, "the model has no RadixAttention layer"
        self.model = model
        dtype = next(model.parameters()).dtype
        self.k_buffer: Dict[int, torch.Tensor] = {}
        self.v_buffer: Dict[int, torch.Tensor] = {}
        for attn in attns:
            shape = (max_tokens, attn.tp_k_head_num)
            self.k_buffer[attn.layer_id] = torch.zeros(
                *shape, attn.qk_head_dim, dtype=dtype
            )
            self.v_buffer[attn.layer_id] = torch.zeros(
                *shape, attn.v_head_dim, dtype=dtype
            )
        self.req_to_token = torch.zeros(max_reqs, max_tokens, dtype=torch.long)
        self.seq_lens = [0] * max_reqs
        self.next_free_loc = 0
        self.backend = CPUAttentionBackend(self)

    def _allocate(self, req: int, num_tokens: int) -> torch.Tensor:
        locs = torch.arange(self.next_free_loc, self.next_free_loc + num_tokens)
        self.next_free_loc += num_tokens
        start = self.seq_lens[req]
        self.req_to_token[req, start : start + num_tokens] = locs
        self.seq_lens[req] += num_tokens
        return locs

    def extend(
        self, reqs: Sequence[int], token_lists: Sequence[List[int]], **model_kwargs
    ):
        """Prefill ``token_lists[i]`` on top of whatever request ``reqs[i]`` holds.

        ``model_kwargs`` go to the model's forward as ModelRunner passes them
        (``input_embeds``, ``get_embedding``, ``pp_proxy_tensors``)."""
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        prefix_lens = [self.seq_lens[r] for r in reqs]
        ext_lens = [len(t) for t in token_lists]
        positions = [torch.arange(p, p + n) for p, n in zip(prefix_lens, ext_lens)]
        locs = [self._allocate(r, n) for r, n in zip(reqs, ext_lens)]
        input_ids = torch.tensor([t for ts in token_lists for t in ts])
        return self._run(
            ForwardMode.EXTEND,
            reqs,
            input_ids,
            torch.cat(positions),
            torch.cat(locs),
            extend_num_tokens=sum(ext_lens),
            extend_seq_lens=torch.tensor(ext_lens),
            extend_prefix_lens=torch.tensor(prefix_lens),
            extend_start_loc=torch.cumsum(torch.tensor([0] + ext_lens[:-1]), 0),
            extend_prefix_lens_cpu=prefix_lens,
            extend_seq_lens_cpu=ext_lens,
            model_kwargs=model_kwargs,
        )

    def decode(self, reqs: Sequence[int], tokens: List[int], **model_kwargs):
        """Run one decode step: one new token for each request."""
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        positions = torch.tensor([self.seq_lens[r] for r in reqs])
        locs = torch.cat([self._allocate(r, 1) for r in reqs])
        return self._run(
            ForwardMode.DECODE,
            reqs,
            torch.tensor(tokens),
            positions,
            locs,
            model_kwargs=model_kwargs,
        )

    def _run(
        self, mode, reqs, input_ids, positions, out_cache_loc, model_kwargs, **extend
    ):
        from sglang.srt.model_executor.forward_batch_info import ForwardBatch

        seq_lens = torch.tensor([self.seq_lens[r] for r in reqs])
        forward_batch = ForwardBatch(
            forward_mode=mode,
            batch_size=len(reqs),
            input_ids=input_ids,
            req_pool_indices=torch.tensor(list(reqs)),
            seq_lens=seq_lens,
            out_cache_loc=out_cache_loc,
            seq_lens_sum=int(seq_lens.sum()),
            seq_lens_cpu=seq_lens,
            positions=positions,
            attn_backend=self.backend,
            **extend,
        )
        return self.model(input_ids, positions, forward_batch, **model_kwargs)
