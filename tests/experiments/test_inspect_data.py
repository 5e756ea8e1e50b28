import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(*flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.inspect_data", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def p5_folder(path, sequences):
    path.mkdir()
    (path / "sequential_data.txt").write_text(sequences)
    datamaps = {"id2user": {"1": "U1", "2": "U2"}, "id2item": {"1": "A", "2": "B", "3": "C"}}
    (path / "datamaps.json").write_text(json.dumps(datamaps))
    return path


def test_prints_stats_and_split_sizes(tmp_path):
    folder = p5_folder(tmp_path / "ok", "1 1 2 3\n2 2 3 1 2\n")
    result = run("--format=p5", f"--dir={folder}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("users: 2", "items: 3", "interactions: 7", "median_seq_len: 3.5",
                     "train_examples: 1", "valid_examples: 2", "test_examples: 2"):
        assert expected in lines


def test_malformed_file_gives_one_error_line_and_status_1(tmp_path):
    folder = p5_folder(tmp_path / "bad", "1 1 2 3\n2 2 oops 1\n")
    result = run("--format=p5", f"--dir={folder}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {folder / 'sequential_data.txt'}:2: item id 'oops' is not an integer"
    ]
