"""CLI errors from the Python API name the flag the user typed, not the parameter name."""

from __future__ import annotations

import argparse

import pytest

from edgefss.cli import main
from edgefss.cli._args import name_the_flag


def _args(**values):
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint")
    p.add_argument("--backbone-weights")
    p.add_argument("--support", nargs="+")
    ns = p.parse_args([])
    for k, v in values.items():
        setattr(ns, k, v)
    ns._parser = p
    return ns


def test_the_flag_whose_value_is_quoted_leads_the_message():
    a = _args(checkpoint="/w/a.pt")
    assert name_the_flag("checkpoint: '/w/a.pt' is not a readable PyTorch checkpoint", a) == \
        "--checkpoint: '/w/a.pt' is not a readable PyTorch checkpoint"


def test_a_list_flag_names_the_entry():
    a = _args(support=["x.jpg", "y.jpg"])
    assert name_the_flag("images[1]: 'y.jpg' cannot be decoded", a) == "--support #2: 'y.jpg' cannot be decoded"


def test_ambiguous_or_already_named_messages_are_left_alone():
    a = _args(checkpoint="/w/a.pt", backbone_weights="/w/a.pt")
    msg = "checkpoint: '/w/a.pt' is not a readable PyTorch checkpoint"
    assert name_the_flag(msg, a) == msg  # both flags hold that path: naming one would be a guess
    b = _args(checkpoint="/w/a.pt")
    named = "--clip-bpe: '/w/a.pt' is not a merges file"
    assert name_the_flag(named, b) == named
    assert name_the_flag("no quoted value here", b) == "no quoted value here"


@pytest.mark.parametrize("flag", ["--checkpoint", "--backbone-weights"])
def test_junk_weights_file_error_names_its_flag(tmp_path, capsys, flag):
    junk = tmp_path / "junk.pt"
    junk.write_text("junk\n")
    out = tmp_path / "bundle"
    rc = main(["export", "--model", "tlg", flag, str(junk), "--imgsz", "64", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1
    assert err.startswith(f"edgefss export: error: {flag}: '{junk}' is not a readable PyTorch checkpoint"), err
    assert not out.exists()
