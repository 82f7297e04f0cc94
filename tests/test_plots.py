from distill import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_epoch_curves_from_a_csv_log(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,step,train/loss,val/acc,val/loss\n"
        "0,9,2.0,,\n0,19,1.0,,\n0,20,,0.5,1.2\n"
        "1,29,0.8,,\n1,40,,0.7,0.9\n"
    )
    curves = plots.read_epoch_curves(csv_path)
    assert curves["train_loss"] == [(1, 1.5), (2, 0.8)]
    assert curves["val_figure"] == [(1, 0.5), (2, 0.7)]
    assert curves["val_loss"] == [(1, 1.2), (2, 0.9)]
    out = plots.training_curves([("run", csv_path)], tmp_path / "curves.png")
    assert out is not None and out.read_bytes().startswith(PNG)


def test_no_logs_no_curves(tmp_path):
    assert plots.training_curves([("run", tmp_path / "missing.csv")], tmp_path / "c.png") is None


def test_figures_for_hand_made_entries(tmp_path):
    entry = {"name": "m", "acc": 0.5, "ece": 0.1, "per_class_f1": [0.5, 0.7],
             "confusion": [[3, 1], [1, 3]],
             "reliability": {"confidence": [0.55, 0.9], "accuracy": [0.5, 0.8], "count": [2, 6]}}
    for path in (plots.confusion_matrices([entry, entry], ["a", "b"], tmp_path / "c.png"),
                 plots.reliability_diagram([entry], tmp_path / "r.png"),
                 plots.per_class_f1([entry], ["a", "b"], tmp_path / "f.png")):
        assert path.read_bytes().startswith(PNG)
