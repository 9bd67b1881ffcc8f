"""
CPU stand-in for SGLang's generation-model suite. NOT a GPU run.

`overlay test` runs this file exactly as it runs upstream's
test/srt/models/test_generation_models.py (same command, ONLY_RUN, log, JUnit
XML and output parsing) to prove the runner end to end where there is no GPU.
It has the suite's shape: a ModelCase dataclass, ALL_OTHER_MODELS, and
TestGenerationModels.test_others honouring ONLY_RUN. It prints the same lines
the real suite prints (the output strings, `rouge_l_scores=[...]`, and per
prompt `prefill logprobs max_diff tensor(...)` / `decode logprobs max_diff
tensor(...)`) and asserts the same tolerances.

The numbers are real but small: each model path maps to a tiny random
checkpoint (seeded). The "HF" side is transformers' OPTForCausalLM in float32;
the "SRT" side is the overlay's native OPT (overlay/python/sglang/srt/models/
opt.py) imported against the CPU stand-ins of SGLang (tests/standin_sglang),
run in float16 through standin_sglang.runner.CPUModelRunner (extend and decode
batches over a paged KV cache). Text goes through a character-level vocabulary.

Usage:

To test a specific model:
1. Add it to ALL_OTHER_MODELS
2. Run `ONLY_RUN=facebook/opt-125m python3 -m pytest test_generation_models.py -k test_others -s`
"""

import dataclasses
import importlib
import importlib.util
import os
import sys
import unittest
from pathlib import Path
from typing import List

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STANDIN_DIR = REPO / "tests" / "standin_sglang"
OPT_PY = REPO / "overlay" / "python" / "sglang" / "srt" / "models" / "opt.py"

# The tensors are tiny: threads only add overhead (and contention on CI).
torch.set_num_threads(1)


@dataclasses.dataclass
class ModelCase:
    model_path: str
    tp_size: int = 1
    prefill_tolerance: float = 5e-2
    decode_tolerance: float = 5e-2
    rouge_l_tolerance: float = 1
    skip_long_prompt: bool = False
    trust_remote_code: bool = False


# All other models that do not run on the CI
ALL_OTHER_MODELS = [
    ModelCase("facebook/opt-125m", skip_long_prompt=True),
    # The same tiny checkpoint with tolerances float16 cannot meet: it must fail.
    ModelCase(
        "cpu-standin/opt-125m-strict", prefill_tolerance=1e-6, decode_tolerance=1e-6
    ),
]

TORCH_DTYPES = [torch.float16]

# Tiny OPT configurations standing in for each checkpoint (opt-125m is pre-LN,
# with tied embeddings and a ReLU feed-forward).
TINY_OPT = dict(
    hidden_size=32,
    word_embed_proj_dim=32,
    ffn_dim=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    do_layer_norm_before=True,
    dropout=0.0,
)
CHECKPOINTS = {
    "facebook/opt-125m": TINY_OPT,
    "cpu-standin/opt-125m-strict": TINY_OPT,
}

PROMPTS = [
    "The capital of France is",
    "Write a short story about a robot.",
    "1, 2, 3, 4,",
    "Tell me about the sea",
]
MAX_NEW_TOKENS = 12

# Character-level vocabulary: OPT's specials 0..3, then printable ASCII.
FIRST_CHAR_ID = 4
CHARS = [chr(c) for c in range(32, 127)]
VOCAB_SIZE = FIRST_CHAR_ID + len(CHARS)
BOS_ID = 2


def encode(text: str) -> List[int]:
    return [BOS_ID] + [FIRST_CHAR_ID + CHARS.index(c) for c in text]


def decode(ids: List[int]) -> str:
    return "".join(CHARS[i - FIRST_CHAR_ID] if i >= FIRST_CHAR_ID else "" for i in ids)


@dataclasses.dataclass
class Outputs:
    output_strs: List[str]
    top_input_logprobs: List[List[List[float]]]
    top_output_logprobs: List[List[List[float]]]


def top_logprobs(logits: torch.Tensor, k: int = 5) -> List[List[float]]:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return torch.topk(logprobs, k, dim=-1).values.tolist()


def tiny_checkpoint(model_path: str):
    import transformers

    torch.manual_seed(0)
    config = transformers.OPTConfig(vocab_size=VOCAB_SIZE, **CHECKPOINTS[model_path])
    model = transformers.OPTForCausalLM(config).float().eval()
    with torch.no_grad():  # random everything, not HF's zero biases / unit norms
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    return config, model


def hf_forward(model, prompts: List[str]) -> Outputs:
    """Greedy generation with transformers, recomputing the full sequence."""
    out = Outputs([], [], [])
    with torch.no_grad():
        for prompt in prompts:
            ids = encode(prompt)
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            out.top_input_logprobs.append(top_logprobs(logits))
            generated, steps = [], []
            for _ in range(MAX_NEW_TOKENS):
                token = int(logits[-1].argmax())
                steps.append(top_logprobs(logits[-1:])[0])
                generated.append(token)
                logits = model(input_ids=torch.tensor([ids + generated])).logits[0]
            out.output_strs.append(decode(generated))
            out.top_output_logprobs.append(steps)
    return out


def _standin():
    """tests/standin_sglang (this file runs in its own process, from its own dir)."""
    if str(STANDIN_DIR.parent) not in sys.path:
        sys.path.insert(0, str(STANDIN_DIR.parent))
    return importlib.import_module("standin_sglang")


def srt_forward(config, hf_model, prompts: List[str], dtype) -> Outputs:
    """The overlay's OPT on the CPU stand-ins: chunked prefill, then decode."""
    standin = _standin()
    out = Outputs([], [], [])
    with standin.install():
        opt = standin.import_overlay_module("sglang.srt.models.opt", OPT_PY)
        runner_mod = importlib.import_module("standin_sglang.runner")
        model = opt.OPTForCausalLM(config)
        model.load_weights(iter(hf_model.state_dict().items()))
        model = model.to(dtype).eval()
        for prompt in prompts:
            ids = encode(prompt)
            runner = runner_mod.CPUModelRunner(model, max_tokens=256, max_reqs=2)
            # Input logprobs: request 0 is prefilled one chunk of one token at
            # a time (an extend on top of its cached prefix each time).
            per_position = [runner.extend([0], [[t]]).next_token_logits[0] for t in ids]
            out.top_input_logprobs.append(top_logprobs(torch.stack(per_position)))
            # Generation: request 1 is prefilled whole, then decoded greedily.
            logits = runner.extend([1], [ids]).next_token_logits[0]
            generated, steps = [], []
            for _ in range(MAX_NEW_TOKENS):
                token = int(logits.argmax())
                steps.append(top_logprobs(logits[None])[0])
                generated.append(token)
                logits = runner.decode([1], [token]).next_token_logits[0]
            out.output_strs.append(decode(generated))
            out.top_output_logprobs.append(steps)
    return out


def lcs_length(a: str, b: str) -> int:
    row = [0] * (len(b) + 1)
    for ca in a:
        prev_diag = 0
        for j, cb in enumerate(b, 1):
            prev_diag, row[j] = row[j], (
                prev_diag + 1 if ca == cb else max(row[j], row[j - 1])
            )
    return row[-1]


def rouge_l(hyps: List[str], refs: List[str]) -> List[float]:
    """Character-level ROUGE-L F-measure of each pair."""
    scores = []
    for hyp, ref in zip(hyps, refs):
        common = lcs_length(hyp, ref)
        if not hyp or not ref or not common:
            scores.append(0.0)
            continue
        p, r = common / len(hyp), common / len(ref)
        scores.append(2 * p * r / (p + r))
    return scores


def check_close(hf: Outputs, srt: Outputs, case: ModelCase) -> None:
    print(f"{hf.output_strs=}")
    print(f"{srt.output_strs=}")
    rouge_l_scores = rouge_l(hf.output_strs, srt.output_strs)
    print(f"{rouge_l_scores=}")
    assert all(s >= case.rouge_l_tolerance for s in rouge_l_scores), (
        f"ROUGE-L below rouge_l_tolerance={case.rouge_l_tolerance}: {rouge_l_scores}"
    )
    for i in range(len(hf.output_strs)):
        hf_lp = torch.tensor(hf.top_input_logprobs[i])
        srt_lp = torch.tensor(srt.top_input_logprobs[i])
        diff = (hf_lp - srt_lp).abs()
        print("prefill logprobs max_diff", diff.max())
        assert torch.all(diff < case.prefill_tolerance), (
            f"prefill logprobs are not all close for {case.model_path} "
            f"prefill_tolerance={case.prefill_tolerance}"
        )
        hf_lp = torch.tensor(hf.top_output_logprobs[i])
        srt_lp = torch.tensor(srt.top_output_logprobs[i])
        diff = (hf_lp - srt_lp).abs()
        print("decode logprobs max_diff", diff.max())
        assert torch.all(diff < case.decode_tolerance), (
            f"decode logprobs are not all close for {case.model_path} "
            f"decode_tolerance={case.decode_tolerance}"
        )


class TestGenerationModels(unittest.TestCase):
    def assert_close_logits_and_output_strs(
        self, prompts: List[str], model_case: ModelCase, torch_dtype: torch.dtype
    ) -> None:
        config, hf_model = tiny_checkpoint(model_case.model_path)
        hf_outputs = hf_forward(hf_model, prompts)
        srt_outputs = srt_forward(config, hf_model, prompts, torch_dtype)
        check_close(hf_outputs, srt_outputs, model_case)

    def test_others(self):
        for model_case in ALL_OTHER_MODELS:
            # Only run a specified model
            if (
                "ONLY_RUN" in os.environ
                and os.environ["ONLY_RUN"] != model_case.model_path
            ):
                continue

            prompts = PROMPTS
            if model_case.skip_long_prompt:
                prompts = [p for p in PROMPTS if len(p) < 1000]
            for torch_dtype in TORCH_DTYPES:
                self.assert_close_logits_and_output_strs(
                    prompts, model_case, torch_dtype
                )


if __name__ == "__main__":
    unittest.main()
