"""Run records name the commit, CPU and kernel path that made them; records without that field still read."""

from __future__ import annotations

import subprocess

import torch

from stages.core import machine
from stages.core.record import RunRecord, read_record, write_record


def test_probe_names_this_checkout_commit_and_the_kernel_path():
    head = subprocess.run(
        ["git", "-C", str(machine.CHECKOUT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    found = machine.probe()
    assert found.commit.removesuffix("+dirty") == head
    assert found.kernels == torch.backends.cpu.get_cpu_capability()
    assert found.cpu and found.gpu == ""
    assert found.describe() == f"{found.cpu}, {found.kernels} kernels"


def test_outside_a_git_checkout_the_commit_is_empty_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "CHECKOUT", tmp_path)
    machine.code_commit.cache_clear()
    try:
        assert machine.code_commit() == ""
    finally:
        machine.code_commit.cache_clear()


def test_a_record_keeps_its_machine_and_an_older_record_reads_without_one(tmp_path):
    probed = machine.Machine(commit="0123456789ab+dirty", cpu="AMD EPYC", kernels="AVX2", gpu="")
    record = RunRecord(run_id="r", kind="dense", code_hash="h", torch_version="t", machine=probed)
    write_record(tmp_path / "new", record)
    assert read_record(tmp_path / "new").machine == probed
    write_record(tmp_path / "old", RunRecord(run_id="r", kind="dense", code_hash="h", torch_version="t"))
    text = (tmp_path / "old" / "provenance.json").read_text().replace('"machine": null,', "")
    (tmp_path / "old" / "provenance.json").write_text(text)
    assert "machine" not in text and read_record(tmp_path / "old").machine is None
