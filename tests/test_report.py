"""The committed ci results (docs/results_ci.json, docs/results.md, README) come from the current code and data.

Retrains (or reuses, as the notebooks do) seed 0 of H2ARN and of the Euclidean baseline under ``ci``, which is
deterministic on the CPU, and compares its test metrics with the committed JSON. When this fails, the numbers
in the docs are stale: rerun ``python -m h2arn.course.report --profile ci`` and commit what it writes.
"""
from __future__ import annotations

import json

import pytest

from h2arn.course.report import README_BEGIN, evaluate_variant_seed, results_json_path
from h2arn.paths import repo_root

FIX = "Fix: rerun `python -m h2arn.course.report --profile ci` and commit docs/ and README.md"


@pytest.fixture(scope="module")
def committed() -> dict:
    path = results_json_path("ci")
    assert path.is_file(), f"{path} missing. {FIX}"
    return json.loads(path.read_text(encoding="utf-8"))


def test_committed_results_cover_five_seeds_and_are_in_the_docs(committed):
    assert len(committed["seeds"]) >= 5
    doc = (repo_root() / "docs" / "results.md").read_text(encoding="utf-8")
    assert "<!-- profile:ci:begin -->" in doc and committed["command"] in doc
    readme = (repo_root() / "README.md").read_text(encoding="utf-8")
    assert README_BEGIN in readme
    h = committed["variants"]["h2arn"]["mean"]["t2p_hmAP"]["mean"]
    assert f"{h:.1f}" in readme, f"the README's results block does not show the committed numbers. {FIX}"


@pytest.mark.parametrize("variant", ["h2arn", "euclidean"])
def test_committed_ci_numbers_are_reproduced_by_the_current_code(committed, variant):
    m, _ = evaluate_variant_seed("ci", variant, 0, "cpu")
    row = next(r for r in committed["variants"][variant]["per_seed"] if r["seed"] == 0)
    for key in ("rsum", "t2p_hmAP", "p2t_hmAP", "t2p_nDCG@10"):
        assert m[key] == pytest.approx(row[key], abs=1e-3), f"{variant} seed 0 {key}: now {m[key]:.3f}, " \
                                                          f"committed {row[key]:.3f}. {FIX}"


def _fake_study(compare: str) -> dict:
    runs = []
    for value in (2, 4):
        for variant, shift in (("h2arn", 0.0), ("euclidean", 1.0)):
            for seed in range(5):
                runs.append({"value": value, "variant": variant, "seed": seed,
                             "metrics": {"t2p_hmAP": 40.0 + value + shift + seed + (0.1 * seed if shift else 0)}})
    return {"study": "dimension", "axis": "d_model", "values": [2, 4], "variants": ["h2arn", "euclidean"],
            "seeds": list(range(5)), "question": "?", "runs": runs, "compare": compare, "split": "test",
            "command": "python -m h2arn.course.studies run dimension --profile ci --seeds 5"}


def test_study_summary_pairs_over_seeds(tmp_path, monkeypatch):
    from h2arn.course import report

    s = report.summarise_study(_fake_study("variants"))
    p = s["rows"][0]["paired"]["euclidean"]
    assert p["n"] == 5 and p["mean"] == pytest.approx(1.2) and p["lo"] > 0    # seed effect cancels in the pairs
    s2 = report.summarise_study(_fake_study("values"))
    assert s2["rows"][1]["paired"]["h2arn"]["mean"] == pytest.approx(2.0)     # value 4 vs value 2
    monkeypatch.setattr("h2arn.paths.figures_dir", lambda: tmp_path)
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path.parent)
    text = "\n".join(report.study_section(_fake_study("variants"), "ci"))
    assert "euclidean − h2arn" in text and "+1.2 [" in text


@pytest.mark.parametrize("name", ["dimension", "depth", "redundancy", "scale", "options"])
def test_committed_studies_are_complete_and_measured_on_the_current_benchmark(name):
    from h2arn.course.studies import STUDIES, load_study
    from h2arn.data.synthetic import GENERATOR_VERSION

    assert name in STUDIES
    fix = f"Fix: rerun `python -m h2arn.course.studies run {name} --profile ci --seeds 5`, then " \
          "`python -m h2arn.course.report --profile ci --render-only`, and commit docs/ and figures/"
    study = load_study("ci", name)
    assert study is not None, f"docs/studies/ci/{name}.json missing. {fix}"
    assert study.get("generator_version") == GENERATOR_VERSION, \
        f"{name}: measured on generator {study.get('generator_version')}, the code is at {GENERATOR_VERSION}. {fix}"
    assert not study["missing_runs"] and len(study["seeds"]) >= 5, f"{name}: runs missing. {fix}"
    doc = (repo_root() / "docs" / "results.md").read_text(encoding="utf-8")
    assert study["command"] in doc, f"{name}: docs/results.md does not show this study. {fix}"
