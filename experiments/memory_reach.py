r"""Memory reach of a finished run's test rankings (sgrec_jax/evaluation/memory_reach.py).

    SGREC_DATA_DIR=... python -m experiments.memory_reach --workdir=RUN_DIR \
        [--k=10 --window=3] [--wider=20:3,50:3] [--out=RUN_DIR/memory_reach.json]

RUN_DIR is a finished `experiments.train` run, or a multi-seed archive of one (config.json,
results.json and <system>/test_rankings.npz; checkpoints are not needed); it is only read. The
test users are split by whether their target is among the k most frequent training successors
of their last `window` history items (default: the run's own model.options.transition_memory and
transition_memory_window), and every system with saved test rankings (sft, item_transition,
popularity, sasrec, fusion) is scored within each group. --wider names larger memories (k:window)
whose reach is reported as each group's share they would bring into the memory. Writes one JSON
(the report and provenance) and logs a table.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags, logging
from ml_collections import ConfigDict

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, read_json, read_npz, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.sources import load_splits
from sgrec_jax.evaluation.memory_reach import reach_report
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.finished_run import load_run_dataset
from sgrec_jax.stages.pipeline import CONFIG_FILE, RESULTS_FILE
from sgrec_jax.stages.sft import training_transition_counts

SYSTEMS = ("sft", "item_transition", "popularity", "sasrec", "fusion")

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run (or its multi-seed archive).")
_K = flags.DEFINE_integer("k", 0, "Successors per source item (0: the run's transition_memory).")
_WINDOW = flags.DEFINE_integer("window", 0, "Last history items read (0: the run's "
                               "transition_memory_window).")
_WIDER = flags.DEFINE_list("wider", [], "Larger memories K:WINDOW whose extra reach to report.")
_OUT = flags.DEFINE_string("out", None, "Output JSON (default RUN_DIR/memory_reach.json).")


def parse_sizes(values: list[str]) -> list[tuple[int, int]]:
    """[(k, window)] of "K:WINDOW" strings; ValueError naming a malformed one."""
    sizes = []
    for value in values:
        k, sep, window = value.partition(":")
        if not (sep and k.isdigit() and window.isdigit() and int(k) > 0 and int(window) > 0):
            raise ValueError(f"--wider entries must be K:WINDOW with positive integers, got "
                             f"{value!r}")
        sizes.append((int(k), int(window)))
    return sizes


def memory_size(config, k: int, window: int) -> tuple[int, int]:
    """(k, window): the flags, else the run's memory options; ValueError if neither is set."""
    options = config.model.options
    k = k or int(options.get("transition_memory", 0))
    window = window or int(options.get("transition_memory_window", 1))
    if k < 1:
        raise ValueError("the run has no transition memory: give --k (and --window)")
    return k, window


def memory_reach_of_run(workdir, k: int, window: int, wider: list[str], out) -> dict:
    """Writes and returns the memory-reach report of a finished run (module docstring)."""
    workdir = as_path(workdir)
    for name in (CONFIG_FILE, RESULTS_FILE):
        if not (workdir / name).exists():
            raise ValueError(f"--workdir {workdir} is not a finished run: no {name}")
    config = ConfigDict(read_json(workdir / CONFIG_FILE))
    k, window = memory_size(config, k, window)
    wider = parse_sizes(wider)
    dataset = load_run_dataset(workdir, config)
    test = load_splits(dataset, max_history=config.data.max_history).test
    users_u = np.asarray(test.user)
    position = {int(u): i for i, u in enumerate(users_u)}
    rankings = {}
    for system in SYSTEMS:
        path = workdir / system / "test_rankings.npz"
        if not path.exists():
            continue
        saved = read_npz(path)
        try:
            order = np.array([position[int(u)] for u in saved["users_u"]])
        except KeyError as e:
            raise ValueError(f"{path}: user {e} is not a test user of the run's split") from None
        if len(order) != len(users_u):
            raise ValueError(f"{path}: {len(order)} users, the split has {len(users_u)}")
        items_uk = np.empty_like(saved["items_uk"])
        items_uk[order] = saved["items_uk"]
        targets_u = np.empty_like(saved["targets_u"])
        targets_u[order] = saved["targets_u"]
        rankings[system] = (items_uk, targets_u)
    if not rankings:
        raise ValueError(f"--workdir {workdir}: no <system>/test_rankings.npz "
                         f"(systems {', '.join(SYSTEMS)})")
    report = reach_report(rankings, test.history, test.history_mask, test.target,
                          training_transition_counts(dataset), k, window, wider)
    out = as_path(out) if out else workdir / "memory_reach.json"
    result = {"workdir": str(workdir), **report,
              "provenance": provenance(dataset.source_files, config)}
    write_json(out, result)
    logging.info("wrote %s", out)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    quiet_library_logs()
    result = run_or_exit(lambda: memory_reach_of_run(_WORKDIR.value, _K.value, _WINDOW.value,
                                                     _WIDER.value, _OUT.value))
    systems = [s for s in SYSTEMS if s in result["groups"]["in_memory"]]
    print(f"memory k {result['k']} window {result['window']}, {result['num_users']} test users")
    def line(name: str, entry: dict) -> str:
        return f"{name:28s} share {entry['share']:.4f} " + " ".join(
            f"{s} R@10 {entry[s]['recall@10']:.4f} (memory slots {entry[s]['memory_slots@10']:.2f})"
            for s in systems)

    for group, entry in result["groups"].items():
        print(line(group, entry))
        for gain, gained in entry["gains"].items():
            print(line(f"  reached by {gain}", gained))


if __name__ == "__main__":
    run_app(main)
