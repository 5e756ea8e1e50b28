"""SASRec-CE baseline on Amazon 2014 Beauty with RecBole's settings (its reported R@10: 0.0821).

    python -m experiments.train --config=experiments/configs/beauty_sasrec.py --workdir=DIR

2 blocks, 2 heads, hidden 64, inner 256, dropout 0.5, full-softmax cross-entropy, Adam at lr
1e-3 with no weight decay or warmup, batch 256 (see sgrec_jax/models/sasrec.py). One epoch is
131,413 examples / 256 = 513 steps: validation runs once per epoch and training stops after 10
validations without improvement (RecBole's stopping_step), at 200 epochs at most. Validation
ranks the full catalog for every validation user, as RecBole does (the base config's
eval.valid_users = 2000 subset exists for the generator, whose beam search is ~20x slower):
22,363 users take about 6 s, an epoch about 3 min on 2 CPU cores (so 200 epochs would be ~10 h;
early stopping ends it well before). Unlike RecBole, the learning rate decays (cosine, to 0 at
the last step). The data part of the config is beauty_sids.py's; its SID fields are unused.
"""

from ml_collections import ConfigDict

from experiments.configs import beauty_sids

MAX_EPOCHS = 200


def recbole_sasrec(config: ConfigDict, steps_per_epoch: int) -> ConfigDict:
    """Turns a dataset's config into the SASRec-only run with RecBole's SASRec-CE settings."""
    config.stages = ("sasrec",)
    config.sasrec.model.update(
        num_layers=2, num_heads=2, d_model=64, d_ff=256, dropout=0.5, attention_dropout=0.5,
        norm_first=False,
    )
    config.sasrec.train.update(
        batch_size=256, learning_rate=1e-3, warmup_steps=0, weight_decay=0.0,
        eval_every=steps_per_epoch, num_steps=MAX_EPOCHS * steps_per_epoch, patience=10,
        best_metric="ndcg@10",
    )
    config.eval.valid_users = 0  # All of them.
    return config


def get_config(arg: str = ""):
    del arg  # No variants.
    return recbole_sasrec(beauty_sids.get_config(), steps_per_epoch=513)
