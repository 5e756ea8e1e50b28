"""psj_report end to end on a small synthetic world: the report's PairAUCs and its provenance."""

from experiments.configs import quickstart
from experiments.psj_report import REPORT_FILE, psj_report
from sgrec_jax.core.files import read_json


def test_report_has_pair_aucs_and_provenance(tmp_path):
    config = quickstart.get_config()
    config.data.options.num_items = 200
    config.data.options.num_users = 120
    report = psj_report(config, str(tmp_path))
    written = read_json(tmp_path / REPORT_FILE)
    assert set(written) == set(report) and written["provenance"]["git_commit"]
    for kind in ("random", "nearest", "popular"):
        assert report[f"held_out_pairs/{kind}"] > 0
        for method in ("uniform", "grpo", "bradley_terry"):
            assert 0.0 <= report[f"pair_auc/{kind}/{method}"] <= 1.0
    record = report["provenance"]
    assert record["git_commit"] and record["data_files_sha256"] is not None
    assert record["config"]["data"]["options"]["num_items"] == 200
