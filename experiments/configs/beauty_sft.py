"""TIGER-class generator on Amazon 2014 Beauty, protocol of benchmarks.md, about 2 h on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/beauty_sft.py \
        --workdir=workdirs/beauty_sft

Arg selects the SIDs: "letter_index" (default: LETTER's 4-level RQ-VAE index shipped with the
data, 13 collisions resolved by the dedup level), or "rq_kmeans" / "rq_vae" built here from the
real titles and categories. Encoder-decoder, 4+4 layers, d 128, item-level history tokens (one
per history item, from its code embeddings), which is what makes it trainable on a CPU.
"""

from experiments.configs import beauty_sids


def get_config(arg: str = "letter_index"):
    config = beauty_sids.get_config(arg or "letter_index")
    config.stages = ("sids", "sft")
    config.model.name = "encoder_decoder"
    config.model.options.update(
        num_layers=4, d_model=128, num_heads=4, d_ff=512, dropout=0.1, history_encoding="item"
    )
    config.sft.batch_size = 256
    config.sft.num_steps = 7_000
    config.sft.learning_rate = 2e-3
    config.sft.warmup_steps = 1000
    config.sft.eval_every = 1000
    config.sft.patience = 4
    config.eval.beam_size = 20
    config.eval.valid_users = 2000
    return config
