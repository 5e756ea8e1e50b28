"""TIGER-class generator on Amazon 2018 Scientific (LETTER format), about 1 h on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/scientific_sft.py --workdir=DIR

Arg selects the SIDs: "zcr_index" (default: CollisionGenRec's 4-level RQ-VAE index shipped with
the data, no collisions), or "rq_kmeans" / "rq_vae" built here from the item text. The model is
beauty_sft.py's (4+4-layer encoder-decoder, d 128, item-level history tokens). Scientific has
33,541 training examples, 131 steps of 256 per epoch: 2,400 steps are about 18 epochs (Beauty's
7,000 are 14), validated every ~3 epochs. At the ~0.5-0.8 steps/s measured here a validation
(2,000 users, beam 20) costs 45-60 s and the test (8,317 users) about 2 min.
"""

from experiments.configs import scientific_sids


def get_config(arg: str = "zcr_index"):
    config = scientific_sids.get_config(arg or "zcr_index")
    config.stages = ("sids", "sft")
    config.model.name = "encoder_decoder"
    config.model.options.update(
        num_layers=4, d_model=128, num_heads=4, d_ff=512, dropout=0.1, history_encoding="item"
    )
    config.sft.batch_size = 256
    config.sft.num_steps = 2_400
    config.sft.learning_rate = 2e-3
    config.sft.warmup_steps = 250
    config.sft.eval_every = 400
    config.sft.patience = 3
    config.eval.beam_size = 20
    config.eval.valid_users = 2000
    return config
