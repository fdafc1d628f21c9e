"""Report JSON round trip, the table, and the plot."""

import json

import pytest

from eventkernel.bench.report import (BenchReport, Environment, StepResult, WarmupResult,
                                      format_table, plot)


def sample_report():
    env = Environment.collect("cpu", ["eventkernel", "bench", "--quick"])
    report = BenchReport(env, bandwidth_bytes_per_s=3.0e12)
    for tokens in (1, 16):
        floor = 0.8 * tokens ** 0.1
        report.results += [
            StepResult("llama-3.2-1b", "floor", tokens, 512, floor, floor, floor, floor, 0,
                       int(floor * 3e9), floor),
            StepResult("llama-3.2-1b", "torch-compile", tokens, 512, 1.4, 1.3, 1.5, 1.3, 100,
                       int(floor * 3e9), floor),
            StepResult("llama-3.2-1b", "hf", tokens, 512, 2.8, 2.7, 3.0, 2.6, 100,
                       int(floor * 3e9), floor),
            StepResult("llama-3.2-1b", "eventkernel", tokens, 512, 1.0, 0.95, 1.1, 0.9, 100,
                       int(floor * 3e9), floor),
        ]
    report.warmups.append(WarmupResult("llama-3.2-1b", "torch-compile", 512, 2.0,
                                       {1: 20.0, 16: 18.0}, 22.0, 40.0))
    report.warmups.append(WarmupResult("llama-3.2-1b", "eventkernel", 512, 30.0,
                                       {1: 0.1, 16: 0.2}, 30.1, 30.3,
                                       {"compiler passes": 9.0, "weights": 4.0,
                                        "kernel cold cache": 14.0, "kernel warm cache": 1.5,
                                        "load + tables": 1.5}))
    return report


def test_json_round_trip(tmp_path):
    report = sample_report()
    path = report.save(tmp_path / "results" / "r.json")
    data = json.loads(path.read_text())
    row = data["results"][1]
    assert row["tokens_per_s"] == pytest.approx(1 / 1.4e-3)
    assert row["fraction_of_floor"] == pytest.approx(row["floor_ms"] / 1.4)
    assert data["environment"]["torch_version"] and data["environment"]["date"]
    assert data["environment"]["command_line"] == ["eventkernel", "bench", "--quick"]
    loaded = BenchReport.load(path)
    assert loaded.results == report.results and loaded.warmups == report.warmups


def test_table_has_speedups():
    table = format_table(sample_report())
    assert "x vs hf" in table and "x vs torch-compile" in table
    line = next(line for line in table.splitlines() if " eventkernel " in line)
    assert line.split()[-2:] == ["2.80", "1.40"]
    assert "warm-up" in table
    assert "build = compiler passes 9.0, weights 4.0, kernel cold cache 14.0" in table


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = sample_report().save(tmp_path / "r.json")
    png = plot(path, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
