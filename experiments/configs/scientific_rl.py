"""RL alignment of the Scientific SFT generator (scientific_sft.py's work directory).

    python -m experiments.train --config=experiments/configs/scientific_rl.py \
        --workdir=DIR --config.rl.init_workdir=SFT_DIR

SFT_DIR (default workdirs/scientific_sft) is a finished run of scientific_sft.py with its default
SIDs (zcr_index): its sids.npz and best SFT checkpoint are the start policy and the frozen KL
reference, and its model config must equal this one's (it is: both come from scientific_sft).
Arg: the advantage estimator ("a2po", the default, or any ESTIMATORS name). Rewards: "ecpm"
(simulated bids x a SASRec pCTR model trained here) and the PSJ (feature evidence), both judged on
every request (`--config.rl.semantic_sample_ratio=0.05` for the paper's sparse judging);
rl/ecpm@10 uses the independently trained "ecpm_eval" model and rl/semantic@10 "emb_cosine", so
neither evaluation reuses a training reward. 500 rollout batches of 64 requests x 16 beams
(the ablation runs fewer: --config.rl.num_steps).
"""

from experiments.configs import scientific_sft


def get_config(arg: str = "a2po"):
    config = scientific_sft.get_config("zcr_index")
    config.stages = ("rl",)
    config.rl.update(
        init_workdir="workdirs/scientific_sft", channels=("ecpm", "psj"),
        estimator=arg or "a2po", semantic_eval_channel="emb_cosine", group_size=16,
        batch_size=64, num_steps=500, learning_rate=5e-5, warmup_steps=25, log_every=10,
        eval_every=100,
    )
    # pCTR models with BCE on 4 uniform negatives overfit quickly on Scientific's 33k training
    # examples: early stopping on validation AUC, strong dropout (test AUC ~0.75 for both).
    config.rl.channel_options.ecpm.update(
        architecture="sasrec", dropout=0.5, learning_rate=3e-3, ctr_steps=2000, eval_every=500,
        patience=2,
    )
    config.rl.channel_options.ecpm_eval.update(
        architecture="mean_pool", dropout=0.3, weight_decay=0.05, learning_rate=3e-3,
        ctr_steps=4000, eval_every=1000, patience=2,
    )
    return config
