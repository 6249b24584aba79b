import json
from pathlib import Path

import pandas as pd

from bcc_pipeline_tests.assets.conftest import materialization
from bcc_pipeline_tests.conftest import REPORT_KEYS


def test_report_is_complete_and_agrees_with_the_split(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "test_metrics_report")
    report_path = Path(metadata["artifact_path"])
    report = json.loads(report_path.read_text())
    assert set(report) == REPORT_KEYS
    split = pd.read_parquet(materialization(result, "stratified_split")["artifact_path"])
    test_rows = split[split["split"] == "test"]
    assert report["n_test"] == len(test_rows)
    matrix = report["confusion_matrix"]
    assert [sum(row) for row in matrix] == [
        int((test_rows["label"] == name).sum()) for name in report["class_names"]
    ]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert abs(report["accuracy"] - correct / report["n_test"]) < 1e-6
    assert metadata["accuracy"] == report["accuracy"]
    for name in ("report.md", "confusion_matrix.png", "per_class.png"):
        assert (report_path.parent / name).stat().st_size > 0
    assert "data:image/png;base64," in metadata["report"]
