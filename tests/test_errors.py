"""The one error-and-exit path every command shares."""

import os
import signal

import pytest

from distill.errors import UsageError, exit_code, one_line


def test_a_worker_traceback_is_shown_as_its_own_last_line():
    wrapped = ("Caught UsageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\ndistill.errors.UsageError: /data/a.png is not an image this data can read')
    assert one_line(wrapped) == "/data/a.png is not an image this data can read"
    assert one_line("a\n  b") == "a b"


def test_usage_errors_ctrl_c_and_sigterm_end_in_one_line(capsys):
    handler = signal.getsignal(signal.SIGTERM)
    def bad():
        raise UsageError("no such thing;\nsay it once")

    def ctrl_c():
        raise KeyboardInterrupt

    cleaned = []

    def terminated():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            cleaned.append(True)  # the command's own clean-up runs

    assert exit_code(bad) == 2 and exit_code(ctrl_c) == 130 and exit_code(terminated) == 143 and cleaned
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: no such thing; say it once",
                     "error: stopped by Ctrl-C; files already written are complete, nothing was half-written",
                     "error: stopped by SIGTERM; files already written are complete, nothing was half-written"]
    assert signal.getsignal(signal.SIGTERM) is handler  # put back as it was


def test_a_value_of_the_wrong_type_names_the_flag_not_every_type_tried(capsys):
    from distill.train import main

    # jsonargparse's own message is a 770-character dump of the Union subtypes tried at each level.
    assert main(["teacher", "--data", "tabular", "--data.dataset", "penguins", "--data.n_components", "abc"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: --data.n_components: 'abc' is not of type float or null"


@pytest.mark.parametrize("argv, said", [
    (["--data", "tabular", "--data.dataset", "penguins", "--data.augment", "foo"],
     "--data.augment: 'foo'; valid: none, munge, gaussian"),
    (["--lr_find", "true"], "--lr_find: 'true'; valid: show, apply"),
    (["--data.batch_size", "abc"], "--data.batch_size: 'abc' is not of type int"),  # nested in the data's union
    (["--data", "tabular", "--data.dataset", "penguins", "--data.scaling", "zz"],
     "--data.scaling: 'zz'; valid: zscore, minmax, none"),
])
def test_a_value_outside_a_flags_choices_names_the_flag_and_its_choices(argv, said, capsys):
    from distill.train import main

    assert main(["teacher", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {said}"
