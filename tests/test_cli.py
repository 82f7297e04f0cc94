"""The command line of the training stages: how arguments and recipes become settings."""

import pytest
import yaml

from distill.train import main


def test_a_recipe_naming_its_data_class_starts_from_that_class_defaults(tmp_path, capsys):
    """The default recipe's image settings (val_fraction 0.1) do not carry into a table recipe unseen."""
    recipe = tmp_path / "t.yaml"
    recipe.write_text("model:\n  model: mlp_small\ndata:\n  class_path: distill.data.TabularDataModule\n"
                      "  init_args:\n    dataset: penguins\n")
    with pytest.raises(SystemExit):
        main(["teacher", "--config", str(recipe), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["val_fraction"] == 0.15  # the table's own default
