"""Peer benchmark: TRL's GRPOTrainer step at the size of our benchmark's RL section.

Issue 14 compares our RL step (`experiments.benchmark --config.sections=rl`: 64 requests x
G = 16 completions, one update) with TRL's GRPOTrainer side by side on the same machine. This
script is the TRL half. It is not part of the package and the test suite never imports it: run
it from a virtual environment of its own (TRL needs PyTorch, which `sgrec_jax` does not):

    python3 -m venv /tmp/trlenv
    /tmp/trlenv/bin/pip install torch==2.13.0 trl transformers datasets accelerate
    /tmp/trlenv/bin/python experiments/peers/trl_grpo_step.py --steps=6 --out=trl.json

What is matched to our benchmark's defaults (`experiments/configs/benchmark.py`): 64 prompts x
16 generations = 1,024 completions per optimizer step, one update per generation batch
(`num_iterations` 1), the clipped GRPO loss with epsilon 0.2, beta 0.04 (so a frozen reference
model is scored, as ours is), learning rate 1e-5, float32 on the CPU, a 20-token prompt (our
history of 20 items) and a 4-token completion (our 3 SID levels + the dedup level), width 128,
4 heads, feed-forward 512, and 8 transformer layers (our 4 encoder + 4 decoder layers) in a
GPT-2 causal LM. Its vocabulary is the 4 x 256 code tokens plus 3 specials, so its output
layer is as small as ours. The reward is MiniOneRec's `rank` as ours computes it: 1 when the
completion is the request's target SID, else 0.

What differs, in TRL's favour: it samples each completion freely (HF `generate`, temperature 1),
where ours runs a constrained beam search over the catalog's trie; its prompt tokens are codes
looked up in one table, where ours embeds each history item as the sum of its codes.

Timing: wall time between consecutive `on_step_end` callbacks (one optimizer step, generation
included), median over the steps after the first (which warms up). Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback

LEVELS = 4  # 3 SID levels + the dedup level, as in the benchmark's synthetic catalog.
CODEBOOK = 256
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def code_token(level: int, code: int) -> str:
    return f"c{level}_{code}"


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the code tokens: one token per SID code, space separated."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for level in range(LEVELS):
        for code in range(CODEBOOK):
            vocab[code_token(level, code)] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                   bos_token="<bos>", eos_token="<eos>")


def make_dataset(num_prompts: int, history: int, seed: int) -> Dataset:
    """Prompts of `history` code tokens and a random target SID per prompt."""
    rng = np.random.default_rng(seed)
    prompts, targets = [], []
    for _ in range(num_prompts):
        codes = rng.integers(0, CODEBOOK, size=(history,))
        levels = np.arange(history) % LEVELS
        prompts.append(" ".join(code_token(int(lv), int(c)) for lv, c in zip(levels, codes)))
        target = rng.integers(0, CODEBOOK, size=(LEVELS,))
        targets.append(" ".join(code_token(lv, int(c)) for lv, c in enumerate(target)))
    return Dataset.from_dict({"prompt": prompts, "target": targets})


def rank_reward(completions: list[str], target: list[str], **_) -> list[float]:
    """MiniOneRec's `rank` reward: 1 for the target SID, else 0."""
    return [float(c.split() == t.split()) for c, t in zip(completions, target)]


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (generation, scoring, update), from step ends."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="Prompts per step.")
    parser.add_argument("--group", type=int, default=16, help="Generations per prompt (G).")
    parser.add_argument("--history", type=int, default=20, help="Prompt tokens.")
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps (first = warm-up).")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d_ff", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="trl_grpo_step.json")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    tokenizer = make_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.history + LEVELS + 8, n_embd=args.width,
        n_layer=args.layers, n_head=args.heads, n_inner=args.d_ff,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # TRL builds its reference model from the policy's name, so the policy (random weights)
    # goes through a directory of its own.
    model_dir = os.path.join("/tmp", "trl_grpo_step", "policy")
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    completions_per_step = args.prompts * args.group
    grpo = trl.GRPOConfig(
        output_dir=os.path.join("/tmp", "trl_grpo_step"), use_cpu=True, seed=args.seed,
        per_device_train_batch_size=completions_per_step, num_generations=args.group,
        gradient_accumulation_steps=1, num_iterations=1, max_steps=args.steps,
        max_completion_length=LEVELS, generation_kwargs={"min_new_tokens": LEVELS},
        learning_rate=1e-5, beta=0.04, epsilon=0.2, loss_type="grpo", temperature=1.0,
        save_strategy="no", logging_steps=10_000, report_to="none", bf16=False,
        dataloader_num_workers=0, model_init_kwargs={"dtype": torch.float32},
    )
    timer = StepTimer()
    trainer = trl.GRPOTrainer(
        model=model_dir, reward_funcs=rank_reward, args=grpo, processing_class=tokenizer,
        train_dataset=make_dataset(args.prompts * (args.steps + 1), args.history, args.seed),
        callbacks=[timer],
    )
    trainer.train()
    step_seconds = np.diff(timer.ends).tolist()
    timed = step_seconds[1:] or step_seconds
    median = statistics.median(timed)
    result = {
        "peer": "trl.GRPOTrainer",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "sizes": vars(args),
        "step_seconds": step_seconds,
        "median_step_seconds": median,
        "completions_per_s": completions_per_step / median,
        "load_average_end": os.getloadavg(),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"TRL GRPOTrainer: {result['completions_per_s']:.1f} completions/s "
          f"(median step {median:.3f} s over {len(timed)} steps, {result['parameters']:,} "
          f"parameters)")


if __name__ == "__main__":
    main()
