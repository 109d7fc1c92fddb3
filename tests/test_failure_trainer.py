"""Failure reasons name the trainer's own exception, also from the tail of the output a poll reads, and the genuine
PyTorch >= 2.6 refusal of a XequiNet checkpoint says what to do."""

from __future__ import annotations

from pathlib import Path

from hpc_sweep.track.failure import diagnose

REAL = (Path(__file__).parent / "fixtures" / "xequinet-real" / "resume-torch26-weights-only.out").read_text()
TAIL = 40  # lines of each output file a poll reads (hpc_sweep.track.decide.task_output)


def tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL:])


def test_weights_only_refusal_says_what_to_do():
    for text in (REAL, tail(REAL)):
        kind, reason = diagnose(text)
        assert kind == "failed"
        assert reason.startswith("torch.load refused the checkpoint (PyTorch >= 2.6 weights_only; it holds "
                                 "omegaconf.dictconfig.DictConfig)")
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in reason and "setup" in reason


def test_the_ranks_exception_not_torchruns_summary():
    """In the tail a poll reads, the rank's Traceback header is gone; its exception line is still the reason."""
    other = REAL.replace("Weights only load failed", "Something else failed")
    assert "Traceback (most recent call last)" not in tail(other).split("[rank0]: _pickle")[0]
    for text in (other, tail(other)):
        assert diagnose(text) == ("failed", "_pickle.UnpicklingError: Something else failed. This file can still be "
                                            "loaded, to do so you have two options, do those steps only if you trust "
                                            "the source of the checkpoint.")


def test_the_last_exception_of_a_plain_traceback_cut_at_its_header():
    text = "\n".join(["    raise ValueError(msg)", "ValueError: train_size 3000 + validate_size 1000 exceeds 3999",
                      "[ 11.20-11:55:40 ] [system] bye"])
    assert diagnose(text) == ("failed", "ValueError: train_size 3000 + validate_size 1000 exceeds 3999")


def test_torchrun_refusing_zero_processes():
    text = ("Traceback (most recent call last):\n  File \"/venv/bin/torchrun\", line 8, in <module>\n"
            "    sys.exit(main())\n  File \"/venv/lib/python3.11/site-packages/torch/distributed/run.py\", line 792,"
            " in config_from_args\n    assert args.nproc_per_node > 0\nAssertionError\n")
    assert diagnose(text) == ("failed", "AssertionError")


def test_warnings_and_log_lines_are_not_exceptions():
    text = "train.py:3: UserWarning: torch.load default changes\n2026-12-06 09:28:19 - INFO - Start training\n"
    assert diagnose(text) is None
