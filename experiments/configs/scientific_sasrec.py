"""SASRec-CE baseline on Amazon 2018 Scientific with RecBole's settings (as beauty_sasrec.py).

    python -m experiments.train --config=experiments/configs/scientific_sasrec.py --workdir=DIR

One epoch is 33,541 examples / 256 = 131 steps (under 1 min on 2 CPU cores): validation on all
8,317 validation users once per epoch, patience 10 validations, 200 epochs at most.
"""

from experiments.configs import scientific_sids
from experiments.configs.beauty_sasrec import recbole_sasrec


def get_config(arg: str = ""):
    del arg  # No variants.
    return recbole_sasrec(scientific_sids.get_config(), steps_per_epoch=131)
